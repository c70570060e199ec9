import assert from "node:assert/strict";
import { test } from "node:test";
import { Permissions, permissionKeyProblem, serverOf } from "../../src/bridge/permissions";

test("the most specific rule decides: user id, then server, then everyone", () => {
  const p = new Permissions({
    "*": "user",
    "example.org": "admin",
    "@*:spam.example": "none",
    "@friend:spam.example": "user",
    "@boss:other.example": "admin",
    "@troll:example.org": "none",
  });
  assert.equal(p.levelOf("@anyone:elsewhere.example"), "user", "* covers every other server");
  assert.equal(p.levelOf("@alice:example.org"), "admin", "a bare server name covers its users");
  assert.equal(p.levelOf("@alice:EXAMPLE.org"), "admin", "server names compare case-insensitively");
  assert.equal(p.levelOf("@troll:example.org"), "none", "a user id beats its server's rule");
  assert.equal(p.levelOf("@bot:spam.example"), "none", "@*:server is the same as a server name");
  assert.equal(p.levelOf("@friend:spam.example"), "user");
  assert.equal(p.levelOf("@boss:other.example"), "admin");
  assert.equal(p.mayUse("@troll:example.org"), false);
  assert.equal(p.isAdmin("@alice:example.org"), true);
  assert.equal(p.isAdmin("@anyone:elsewhere.example"), false);
});

test("without a matching rule nobody may use the bridge; malformed ids never match", () => {
  const p = new Permissions({ localhost: "user", "@admin:localhost": "admin" });
  assert.equal(p.mayUse("@alice:localhost"), true);
  assert.equal(p.mayUse("@alice:localhost:8448"), false, "a port makes it another server name");
  assert.equal(p.mayUse("@eve:evil.example"), false);
  assert.equal(p.mayUse("alice:localhost"), false);
  assert.equal(p.mayUse("@:localhost"), false);
  assert.equal(p.isAdmin("@admin:localhost"), true);
  assert.equal(new Permissions({}).mayUse("@alice:localhost"), false);
});

test("servers with ports and IPv6 literals are server names too", () => {
  assert.equal(serverOf("@a:matrix.example.org:8448"), "matrix.example.org:8448");
  assert.equal(serverOf("@a:[::1]:8448"), "[::1]:8448");
  assert.equal(serverOf("not an id"), null);
  const p = new Permissions({ "matrix.example.org:8448": "user" });
  assert.equal(p.mayUse("@a:matrix.example.org:8448"), true);
  assert.equal(p.mayUse("@a:matrix.example.org"), false);
});

test("rule keys are checked so a typo cannot silently open or close the bridge", () => {
  assert.equal(permissionKeyProblem("*"), null);
  assert.equal(permissionKeyProblem("example.org"), null);
  assert.equal(permissionKeyProblem("@*:example.org"), null);
  assert.equal(permissionKeyProblem("@alice:example.org"), null);
  assert.match(permissionKeyProblem("@*:") ?? "", /no valid server name/);
  assert.match(permissionKeyProblem("@alice") ?? "", /not a Matrix user id/);
  assert.match(permissionKeyProblem("*.example.org") ?? "", /neither/);
  assert.throws(() => new Permissions({ "bad key!": "user" }), /neither/);
});
