//! Entry points for the fuzz targets in `fuzz/` (see docs/security.md,
//! "Fuzzing"): thin wrappers over crate-private codec functions, so the
//! targets exercise exactly the code the server runs. Not an API.

/// SockJS: a client's message array (`xhr_send`, `jsonp_send`, framed
/// websocket), as the server parses it.
pub fn sockjs_parse_messages(data: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    crate::transport::sockjs::parse_messages(data)
}

/// SockJS: the `a[...]` frame the server writes for `msgs`.
pub fn sockjs_encode_messages(msgs: &[String]) -> String {
    crate::transport::sockjs::encode_messages(msgs)
}

/// SockJS: the `d` field of a form-encoded `jsonp_send` body.
pub fn sockjs_form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    crate::transport::sockjs::form_field(body, name)
}

/// SockJS: whether the server writes `c` as a `\uXXXX` escape.
pub fn sockjs_must_escape(c: char) -> bool {
    crate::transport::sockjs::must_escape(c)
}
