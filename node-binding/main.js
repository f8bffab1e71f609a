'use strict';
// Entry point of the `@herald-push/herald` package (CommonJS; main.mjs re-exports
// it for `import`): the generated loader (index.js), a clear error when no addon
// matches this platform, and the one wiring step the loader cannot do,
// registering the in-process HTTP injector of express-auth.js for
// engine.useExpressAuth() (below: the only place it is registered). It adds no
// API: index.d.ts (generated) describes all of it.

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
  // The platforms this release ships prebuilt: its optionalDependencies
  // (scripts/package writes exactly the packed ones there).
  let prebuilt = 'linux-x64-gnu';
  try {
    const names = Object.keys(require('./package.json').optionalDependencies || {});
    if (names.length) prebuilt = names.map((n) => n.replace(/^@herald-push\/herald-/, '')).join(', ');
  } catch {}
  const error = new Error(
    `@herald-push/herald: no native addon for ${triple}. Prebuilt addons exist for ${prebuilt} ` +
      '(the optional dependencies @herald-push/herald-<platform>; npm skips them with --omit=optional ' +
      'or a lockfile made without them). For another platform build the addon from source with Rust ' +
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

module.exports.__setInjector(require('./express-auth.js').inject);
