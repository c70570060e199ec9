/**
 * The failure model itself (src/bridge/failure.ts), without the core: each predeclared failure
 * carries its kind, status, reason, the words of its status message and notice, and its flags
 * (quoted, retriable, certain) exactly as declared. failure-report.test.ts drives the same kinds
 * through the bridge and checks what reaches Matrix.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BridgeFailure, BridgeUserError, FAILURE_KINDS, FAILURES } from "../../src/bridge/failure";

interface Expected {
  kind: string;
  status: string;
  reason: string;
  message: string;
  notice: string | undefined;
  quote: boolean;
  retriable: boolean;
  certain: boolean;
}

const shape = (f: BridgeFailure): Expected & { name: string; notify: boolean; isError: boolean } => ({
  name: f.name,
  isError: f instanceof Error,
  kind: f.kind,
  status: f.status,
  reason: f.reason,
  message: f.message,
  notice: f.notice,
  notify: f.notify,
  quote: f.quote,
  retriable: f.retriable,
  certain: f.certain,
});

/** A permanent, certain refusal quoted in a notice "Your <noun> was not sent: <why>.". */
const refusal = (kind: string, reason: string, noun: string, why: string): Expected => ({
  kind,
  status: "FAIL_PERMANENT",
  reason,
  message: why,
  notice: `Your ${noun} was not sent: ${why}.`,
  quote: true,
  retriable: false,
  certain: true,
});

const CASES: Record<keyof typeof FAILURES, [BridgeFailure, Expected]> = {
  unsupported_content: [
    FAILURES.unsupported_content("message", "messages of type m.location are not supported yet"),
    refusal("unsupported_content", "com.beeper.unsupported_event", "message", "messages of type m.location are not supported yet"),
  ],
  too_long: [FAILURES.too_long("edit", "it is too long"), refusal("too_long", "com.beeper.unsupported_event", "edit", "it is too long")],
  media_refused: [
    FAILURES.media_refused("it is over the limit", "big.pdf was not sent: it is over the limit."),
    {
      kind: "media_refused",
      status: "FAIL_PERMANENT",
      reason: "com.beeper.unsupported_event",
      message: "it is over the limit",
      notice: "big.pdf was not sent: it is over the limit.",
      quote: true,
      retriable: false,
      certain: true,
    },
  ],
  media_failed: [
    FAILURES.media_failed("the download failed", "gone.pdf was not sent: the download failed."),
    {
      kind: "media_failed",
      status: "FAIL_PERMANENT",
      reason: "m.foreign_network_error",
      message: "the download failed",
      notice: "gone.pdf was not sent: the download failed.",
      quote: true,
      retriable: false,
      certain: true,
    },
  ],
  third_party_chats_off: [
    FAILURES.third_party_chats_off("Not sent: your Third-Party Chats are off."),
    {
      kind: "third_party_chats_off",
      status: "FAIL_PERMANENT",
      reason: "m.no_permission",
      message: "your Third-Party Chats are off",
      notice: "Not sent: your Third-Party Chats are off.",
      quote: false,
      retriable: false,
      certain: true,
    },
  ],
  not_permitted: [
    FAILURES.not_permitted(),
    {
      kind: "not_permitted",
      status: "FAIL_PERMANENT",
      reason: "m.no_permission",
      message: "you are no longer allowed to use this bridge",
      notice: "Not sent: you are no longer allowed to use this bridge.",
      quote: false,
      retriable: false,
      certain: true,
    },
  ],
  withdrawn_while_queued: [FAILURES.withdrawn_while_queued("reaction", "you turned it off"), refusal("withdrawn_while_queued", "m.no_permission", "reaction", "you turned it off")],
  unbridgeable_event: [
    FAILURES.unbridgeable_event("Your sticker was not sent: no stickers.", "no stickers"),
    {
      kind: "unbridgeable_event",
      status: "FAIL_PERMANENT",
      reason: "com.beeper.unsupported_event",
      message: "no stickers",
      notice: "Your sticker was not sent: no stickers.",
      quote: false,
      retriable: false,
      certain: true,
    },
  ],
  target_not_bridged: [
    FAILURES.target_not_bridged("deletion", "its message was never bridged"),
    refusal("target_not_bridged", "m.event_not_handled", "deletion", "its message was never bridged"),
  ],
  not_sender: [FAILURES.not_sender("deletion", "only the sender may"), refusal("not_sender", "m.no_permission", "deletion", "only the sender may")],
  feature_unsupported: [FAILURES.feature_unsupported("edit", "no edits here"), refusal("feature_unsupported", "com.beeper.unsupported_event", "edit", "no edits here")],
  too_old: [FAILURES.too_old("edit", "too late"), refusal("too_old", "m.event_too_old", "edit", "too late")],
  network_refused: [
    FAILURES.network_refused("message", "no such account"),
    {
      kind: "network_refused",
      status: "FAIL_PERMANENT",
      reason: "m.foreign_network_error",
      message: "no such account",
      notice: "Your message was not delivered: no such account.",
      quote: true,
      retriable: false,
      certain: true,
    },
  ],
  not_handled: [
    FAILURES.not_handled(),
    {
      kind: "not_handled",
      status: "FAIL_PERMANENT",
      reason: "m.event_not_handled",
      message: "the bridge could not handle it after several tries",
      notice: "Your message may not have been bridged: the bridge could not handle it after several tries.",
      quote: true,
      retriable: false,
      certain: false,
    },
  ],
  undecryptable: [
    FAILURES.undecryptable("no room key arrived"),
    {
      kind: "undecryptable",
      status: "FAIL_PERMANENT",
      reason: "m.event_not_handled",
      message: "the bridge could not decrypt it (no room key arrived)",
      notice: "Your message was not sent: the bridge could not decrypt it (no room key arrived). Please send it again.",
      quote: true,
      retriable: false,
      certain: true,
    },
  ],
  unencrypted_room: [
    FAILURES.unencrypted_room(),
    {
      kind: "unencrypted_room",
      status: "FAIL_PERMANENT",
      reason: "m.no_permission",
      message: "this bridge only bridges encrypted rooms",
      notice: "Your message was not sent: this bridge only bridges encrypted rooms. Turn on encryption in this room's settings and send it again.",
      quote: true,
      retriable: false,
      certain: true,
    },
  ],
  waiting_for_network: [
    FAILURES.waiting_for_network("WhatsApp"),
    {
      kind: "waiting_for_network",
      status: "PENDING",
      reason: "m.bridge_unavailable",
      message: "WhatsApp is not reachable right now; it will be sent when it is",
      notice: undefined,
      quote: false,
      retriable: true,
      certain: true,
    },
  ],
};

describe("each predeclared failure says what it declares", () => {
  it("the list of kinds is the table's keys, in order", () => {
    assert.deepEqual(FAILURE_KINDS, Object.keys(CASES));
  });

  for (const [name, [failure, expected]] of Object.entries(CASES)) {
    it(`${name}: ${expected.status} ${expected.reason}, ${expected.notice === undefined ? "no notice" : expected.quote ? "a quoted notice" : "a notice"}${expected.retriable ? ", retriable" : ""}${expected.certain ? "" : ", not certain"}`, () => {
      assert.deepEqual(shape(failure), { ...expected, name: "BridgeFailure", isError: true, notify: expected.notice !== undefined });
    });
  }
});

describe("a BridgeFailure made from a bare spec", () => {
  it("defaults to not quoted, not retriable, certain, and no notice", () => {
    const f = new BridgeFailure({ kind: "not_handled", status: "FAIL_PERMANENT", reason: "m.event_not_handled", message: "m" });
    assert.deepEqual(
      { quote: f.quote, retriable: f.retriable, certain: f.certain, notify: f.notify, notice: f.notice },
      { quote: false, retriable: false, certain: true, notify: false, notice: undefined },
    );
  });

  it("keeps the flags it is given", () => {
    const f = new BridgeFailure({ kind: "too_old", status: "FAIL_RETRIABLE", reason: "m.event_too_old", message: "m", notice: "", quote: true, retriable: true, certain: false });
    assert.deepEqual(
      { quote: f.quote, retriable: f.retriable, certain: f.certain, notify: f.notify, notice: f.notice },
      { quote: true, retriable: true, certain: false, notify: true, notice: "" },
    );
  });
});

describe("BridgeUserError", () => {
  it("is an Error named BridgeUserError, of kind invalid unless told", () => {
    const plain = new BridgeUserError("usage: help");
    assert.ok(plain instanceof Error);
    assert.deepEqual({ name: plain.name, message: plain.message, kind: plain.kind }, { name: "BridgeUserError", message: "usage: help", kind: "invalid" });
    assert.equal(new BridgeUserError("no such room", "not_found").kind, "not_found");
  });
});
