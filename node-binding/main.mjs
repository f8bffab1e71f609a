// ESM entry point of `@herald-push/herald`: the same module as `require()` gets
// (main.js), so both share one addon instance and one Express registration.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const herald = require('./main.js');

export const { Engine } = herald;
export default herald;
