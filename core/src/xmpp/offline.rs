//! XEP-0160 offline messages, the XMPP side (sans-IO): which messages may be
//! kept, and how a kept one is handed back, stamped with XEP-0203
//! `<delay/>`. Whether the recipient is available and where messages are
//! kept is the engine's (`Engine::route_to_user`, `store::offline`).

use super::ns;
use super::xml::{parse_element, Element, Limits, Node};

/// XEP-0334 message processing hints.
const NS_HINTS: &str = "urn:xmpp:hints";
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0022 message events (legacy), ignored like chat states.
const NS_EVENT: &str = "jabber:x:event";
/// The feature disco#info advertises (XEP-0160 §6).
pub const FEATURE: &str = "msgoffline";

/// Whether a `<message/>` to a user with no available resource is kept, as
/// ejabberd's mod_offline decides with its defaults (`store_empty_body:
/// unless_chat_state`, `store_groupchat: false`): never an error; a
/// `<store/>` hint keeps it, a `<no-store/>` (or `<no-storage/>`) hint does
/// not; else `headline` and `groupchat` are not kept, and `chat`, `normal`
/// (and type-less) are, unless the message is only a chat state (no body, no
/// subject, nothing but chat states, delays, events and hints).
pub fn storable(m: &Element) -> bool {
    let kind = m.attr("type").unwrap_or("normal");
    if kind == "error" {
        return false;
    }
    let hint = |name: &str| m.child(name, NS_HINTS).is_some();
    if hint("store") {
        return true;
    }
    if hint("no-store") || hint("no-storage") {
        return false;
    }
    if kind == "headline" || kind == "groupchat" {
        return false;
    }
    let standalone_state = m.child("body", ns::CLIENT).is_none()
        && m.child("subject", ns::CLIENT).is_none()
        && m.elements().all(|c| [NS_CHATSTATES, ns::DELAY, NS_EVENT, NS_HINTS].contains(&c.ns.as_str()));
    !standalone_state
}

/// An XEP-0082 date-time in UTC with milliseconds: `2026-12-06T17:49:38.123Z`.
pub fn stamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A kept stanza as it is handed back: the stanza as it was routed (the
/// sender's full JID, the `to` the sender wrote), with `<delay
/// from='<domain>' stamp='…'>Offline storage</delay>` first, as ejabberd
/// sends it. `None` when the stored bytes do not parse (never written so).
pub fn delayed(stored: &[u8], stamp_ms: u64, domain: &str, limits: &Limits) -> Option<Element> {
    // Written by the server from a stanza within the limits; its escaping
    // may have made it a little longer, which must not strand it.
    let limits = Limits { max_stanza_bytes: stored.len().max(limits.max_stanza_bytes), ..*limits };
    let mut m = parse_element(stored, &limits).ok()?;
    if !m.is("message", ns::CLIENT) {
        return None;
    }
    let delay = Element::new("delay", ns::DELAY)
        .with_attr("from", domain)
        .with_attr("stamp", stamp(stamp_ms))
        .with_text("Offline storage");
    m.children.insert(0, Node::Element(delay));
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(xml: &str) -> Element {
        parse_element(xml.as_bytes(), &Limits::default()).unwrap()
    }

    #[test]
    fn chat_and_normal_are_kept_headline_groupchat_error_and_bare_chat_states_are_not() {
        let c = "xmlns='jabber:client'";
        assert!(storable(&msg(&format!("<message {c} type='chat'><body>hi</body></message>"))));
        assert!(storable(&msg(&format!("<message {c} type='normal'><body>hi</body></message>"))));
        assert!(storable(&msg(&format!("<message {c}><body>hi</body></message>"))), "type-less is normal");
        assert!(storable(&msg(&format!("<message {c}><subject>s</subject></message>"))));
        assert!(
            storable(&msg(&format!("<message {c} type='chat'><received xmlns='urn:xmpp:receipts' id='1'/></message>"))),
            "a body-less message that is not only a chat state is kept (store_empty_body: unless_chat_state)"
        );
        for kind in ["headline", "groupchat", "error"] {
            assert!(!storable(&msg(&format!("<message {c} type='{kind}'><body>hi</body></message>"))), "{kind}");
        }
        assert!(!storable(&msg(&format!(
            "<message {c} type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ))));
        assert!(!storable(&msg(&format!("<message {c} type='chat'/>"))));
        assert!(!storable(&msg(&format!(
            "<message {c} type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"
        ))));
        assert!(storable(&msg(&format!(
            "<message {c} type='headline'><body>x</body><store xmlns='urn:xmpp:hints'/></message>"
        ))));
        assert!(!storable(&msg(&format!(
            "<message {c} type='error'><body>x</body><store xmlns='urn:xmpp:hints'/></message>"
        ))));
    }

    #[test]
    fn stamps_are_xep_0082_utc() {
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(stamp(951_782_400_000 + 1), "2000-02-29T00:00:00.001Z");
        assert_eq!(stamp(1_796_579_378_123), "2026-12-06T17:49:38.123Z");
        assert_eq!(stamp(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn a_kept_stanza_comes_back_with_the_delay_first() {
        let m = msg("<message xmlns='jabber:client' from='alice@h/r' to='bob@h' type='chat' id='c1'><body>a &amp; b</body><x xmlns='urn:x'/></message>");
        let back = delayed(&m.to_bytes(), 1_796_579_378_123, "h", &Limits::default()).unwrap();
        let delay = back.elements().next().unwrap();
        assert!(delay.is("delay", ns::DELAY));
        assert_eq!(delay.attr("from"), Some("h"));
        assert_eq!(delay.attr("stamp"), Some("2026-12-06T17:49:38.123Z"));
        assert_eq!(back.attr("to"), Some("bob@h"), "the to the sender wrote, as ejabberd keeps it");
        assert_eq!(back.child("body", ns::CLIENT).unwrap().text(), "a & b");
        assert!(back.child("x", "urn:x").is_some());
        assert!(delayed(b"<presence xmlns='jabber:client'/>", 0, "h", &Limits::default()).is_none());
        assert!(delayed(b"<message", 0, "h", &Limits::default()).is_none());
        let tight = Limits { max_stanza_bytes: 16, ..Limits::default() };
        assert!(delayed(&m.to_bytes(), 0, "h", &tight).is_some(), "a stored stanza is never stranded by the limit");
    }
}
