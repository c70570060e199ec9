"use strict";
// matrix-bot-sdk requires this module at load time but the bridge never uses its crypto.
// The real package downloads a native binary from GitHub in postinstall, which cannot work
// in our build environment, so every member of this stand-in throws when touched.
const message = "end-to-end encryption is unavailable in this build";
module.exports = new Proxy({}, {
  get(_target, prop) {
    if (prop === "__esModule" || prop === "then" || typeof prop === "symbol") return undefined;
    const fail = function () { throw new Error(message); };
    return new Proxy(fail, { construct() { throw new Error(message); }, get() { throw new Error(message); } });
  },
});
