// A minimal XMLHttpRequest for Node, enough for strophe.js's BOSH transport.
//
// strophe.js 5's Node build wires up `ws` and `@xmldom/xmldom` but no XMLHttpRequest,
// and BOSH reads `xhr.responseXML` (the `xhr2` package has no responseXML). This shim
// implements the subset Strophe uses: open/setRequestHeader/overrideMimeType/send/abort,
// readyState/status/responseText/responseXML, getAllResponseHeaders/getResponseHeader
// and onreadystatechange (plus onload/onerror). responseXML is parsed with the global
// DOMParser that strophe.js's Node build installs (import strophe.js first).
//
// Every request carries a hard timeout (default 90 s, above any BOSH `wait` the tests
// use) so no test can hang on a lost response.

import http from 'node:http';
import https from 'node:https';

const DEFAULT_TIMEOUT_MS = 90000;

export class NodeXMLHttpRequest {
  constructor() {
    this.readyState = 0;
    this.status = 0;
    this.statusText = '';
    this.responseText = '';
    this._responseXML = undefined;
    this.responseType = '';
    this.withCredentials = false;
    this.timeout = 0;
    this.onreadystatechange = null;
    this.onload = null;
    this.onerror = null;
    this._headers = {};
    this._resHeaders = {};
    this._req = null;
    this._aborted = false;
  }

  static get UNSENT() {
    return 0;
  }
  static get OPENED() {
    return 1;
  }
  static get HEADERS_RECEIVED() {
    return 2;
  }
  static get LOADING() {
    return 3;
  }
  static get DONE() {
    return 4;
  }

  open(method, url, async = true) {
    if (async === false) throw new Error('NodeXMLHttpRequest: synchronous requests are not supported');
    this._method = method;
    this._url = new URL(url);
    this._headers = {};
    this._aborted = false;
    this._set(1);
  }

  overrideMimeType() {}

  setRequestHeader(name, value) {
    this._headers[name] = value;
  }

  getAllResponseHeaders() {
    return Object.entries(this._resHeaders)
      .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`)
      .join('\r\n');
  }

  getResponseHeader(name) {
    const v = this._resHeaders[String(name).toLowerCase()];
    if (v === undefined) return null;
    return Array.isArray(v) ? v.join(', ') : v;
  }

  get responseXML() {
    if (this.readyState !== 4 || !this.responseText) return null;
    if (this._responseXML === undefined) {
      const P = globalThis.DOMParser;
      if (!P) throw new Error('NodeXMLHttpRequest: no global DOMParser (import strophe.js before using the shim)');
      this._responseXML = new P().parseFromString(this.responseText, 'text/xml');
    }
    return this._responseXML;
  }

  send(body = null) {
    const u = this._url;
    const mod = u.protocol === 'https:' ? https : http;
    const data = body == null ? null : Buffer.from(String(body), 'utf8');
    const headers = { ...this._headers, Connection: 'close' };
    if (data) headers['Content-Length'] = data.length;
    const req = mod.request(
      {
        method: this._method,
        hostname: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        headers,
        agent: false,
      },
      (res) => {
        if (this._aborted) return res.resume();
        this.status = res.statusCode;
        this.statusText = res.statusMessage || '';
        this._resHeaders = res.headers;
        this._set(2);
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          if (this._aborted) return;
          this.responseText = Buffer.concat(chunks).toString('utf8');
          this._set(4);
          if (typeof this.onload === 'function') this.onload({ target: this });
        });
        res.on('error', (e) => this._fail(e));
      },
    );
    this._req = req;
    req.setTimeout(this.timeout > 0 ? this.timeout : DEFAULT_TIMEOUT_MS, () => {
      req.destroy(new Error('NodeXMLHttpRequest: request timed out'));
    });
    req.on('error', (e) => this._fail(e));
    if (data) req.write(data);
    req.end();
  }

  abort() {
    // Strophe replaces onreadystatechange right after abort(); fire nothing.
    this._aborted = true;
    if (this._req) this._req.destroy();
    this.readyState = 4;
    this.status = 0;
  }

  _fail(err) {
    if (this._aborted || this.readyState === 4) return;
    this.status = 0;
    this.responseText = '';
    this.error = err;
    this._set(4);
    if (typeof this.onerror === 'function') this.onerror({ target: this, error: err });
  }

  _set(state) {
    this.readyState = state;
    if (typeof this.onreadystatechange === 'function') this.onreadystatechange({ target: this });
  }
}

export function installXHR() {
  globalThis.XMLHttpRequest = NodeXMLHttpRequest;
}
