'use strict';
// Entry point of the `@herald-push/herald` package (CommonJS; main.mjs re-exports
// it for `import`): the generated loader (index.js), a clear error when no addon
// matches this platform, and the one wiring step the loader cannot do,
// registering light-my-request for engine.useExpressAuth() (below: the only place
// it is registered). It adds no API: index.d.ts (generated) describes all of it.
const http = require('node:http');
const inject = require('light-my-request');

// The loader tries ./herald.<triple>.node (a source build), then the platform
// package @herald-push/herald-<triple> (an optionalDependency npm installs only
// on its platform). When both are missing, say which and how to build one.
function missingAddon(cause) {
  let abi = '';
  if (process.platform === 'linux') {
    const header = process.report?.getReport?.().header;
    abi = header?.glibcVersionRuntime ? '-gnu' : '-musl';
  }
  const triple = `${process.platform}-${process.arch}${abi}`;
  const error = new Error(
    `@herald-push/herald: no native addon for ${triple}. Prebuilt addons exist for linux-x64-gnu ` +
      '(the optional dependency @herald-push/herald-linux-x64-gnu; npm skips it with --omit=optional ' +
      'or a lockfile made without it). For another platform build the addon from source with Rust ' +
      '(cargo >= 1.90) installed: `npm install` in a clone of the Herald repository compiles it ' +
      `(napi build: node-binding/herald.${triple}.node), then \`npm install <clone>/node-binding\` ` +
      `in your project, or set NAPI_RS_NATIVE_LIBRARY_PATH to the built herald.${triple}.node.`,
    { cause },
  );
  error.code = 'ERR_HERALD_NO_ADDON';
  return error;
}

try {
  module.exports = require('./index.js');
} catch (e) {
  throw missingAddon(e);
}

// light-my-request re-parents an Express app's request/response prototypes onto
// its own fake objects. Express shares those prototypes between every request
// of the app, so injecting into the app itself would break the app's real HTTP
// traffic afterwards. Each app is therefore injected through a shadow app with
// private copies of Express's request/response mixins, routed by the app's own
// router: the handlers run unchanged, the real app is left alone.
const shadows = new WeakMap();

// Express 5 has `app.router`; in Express 4 that getter throws and the router is `_router`.
function routerOf(app) {
  try {
    return app.router || app._router;
  } catch {
    return app._router;
  }
}

function shadowOf(app) {
  const router = typeof app === 'function' ? routerOf(app) : undefined;
  if (!router || !app.request || !app.response) return app;
  let shadow = shadows.get(app);
  if (shadow) return shadow;
  const copy = (proto, base) => Object.create(base, Object.getOwnPropertyDescriptors(Object.getPrototypeOf(proto)));
  const own = (base) =>
    Object.create(base, { app: { value: shadow, writable: true, configurable: true, enumerable: true } });
  shadow = (req, res) => shadow.handle(req, res);
  shadow.request = own(copy(app.request, http.IncomingMessage.prototype));
  shadow.response = own(copy(app.response, http.ServerResponse.prototype));
  shadow.settings = app.settings;
  shadow.locals = app.locals;
  for (const m of ['enabled', 'disabled', 'get', 'set']) shadow[m] = app[m].bind(app);
  shadow.handle = (req, res) => {
    req.res = res;
    res.req = req;
    Object.setPrototypeOf(req, shadow.request);
    Object.setPrototypeOf(res, shadow.response);
    if (!res.locals) res.locals = Object.create(null);
    router.handle(req, res, () => {
      res.statusCode = 404;
      res.end('not found');
    });
  };
  shadows.set(app, shadow);
  return shadow;
}

module.exports.__setInjector((app, options) => inject(shadowOf(app), options));
