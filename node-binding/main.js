'use strict';
// Entry point of the `herald` package: the generated loader (index.js) plus the
// one wiring step it cannot do, registering the in-process HTTP injector for
// engine.useExpressAuth() (express-auth.js). It adds no API: index.d.ts (generated) describes all of it.

module.exports = require('./index.js');

module.exports.__setInjector(require('./express-auth.js').inject);
