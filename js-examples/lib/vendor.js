// Serves the browser builds of the client libraries straight from node_modules
// (no CDN, no bundler): GET /vendor/<file>.

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const express = require('express');

// A file inside an installed package, found the way require() looks for the
// package (some packages, like @stomp/stompjs, do not export their bundles).
function pkgFile(pkg, rel) {
  for (const dir of require.resolve.paths(pkg) || []) {
    const file = path.join(dir, pkg, rel);
    if (fs.existsSync(file)) return file;
  }
  throw new Error(`${pkg}/${rel} not found: run npm install at the repository root`);
}

/** Browser bundles by public name. */
const BUNDLES = {
  // @stomp/stompjs 7 (UMD: window.StompJs)
  'stompjs-client.umd.min.js': pkgFile('@stomp/stompjs', 'bundles/stomp.umd.min.js'),
  // stompjs 2.3 — the legacy library RabbitMQ's Web-STOMP examples use (window.Stomp)
  'stomp.min.js': pkgFile('stompjs', 'lib/stomp.min.js'),
  // sockjs-client 1.6 (window.SockJS)
  'sockjs.min.js': pkgFile('sockjs-client', 'dist/sockjs.min.js'),
  // strophe.js 5 (UMD: window.Strophe, $pres, $iq, $msg)
  'strophe.umd.min.js': pkgFile('strophe.js', 'dist/strophe.umd.min.js'),
};

function vendorRouter() {
  const router = express.Router();
  for (const [name, file] of Object.entries(BUNDLES)) {
    router.get(`/${name}`, (req, res) => {
      res.type('application/javascript').sendFile(file, { maxAge: '1h' });
    });
  }
  return router;
}

module.exports = { vendorRouter, BUNDLES };
