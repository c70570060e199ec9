/** What a user types as a WhatsApp number, normalised to E.164 or refused (src/convert/phone.ts). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { normalizePhone } from "../../src/convert/phone";

test("typed numbers become E.164: separators dropped, 00 read as +, surrounding space ignored", () => {
  for (const [typed, e164] of [
    ["+49 151 2345-6789", "+4915123456789"],
    ["  +49 (151) 2345.6789/0 ", "+49151234567890"],
    ["0049151234567", "+49151234567"],
    ["49151234567", "+49151234567"],
    ["+12345678", "+12345678"],
    ["123456789012345", "+123456789012345"],
  ] as const) {
    assert.equal(normalizePhone(typed), e164, typed);
  }
});

test("what is not a phone number is refused", () => {
  for (const typed of [
    "",
    "+",
    "   ",
    "+49 151 abc",
    "x+4915123456789",
    "+4915123456789x",
    "+49_15123456789",
    "+1234567", // 7 digits: too short
    "+1234567890123456", // 16 digits: longer than E.164 allows
    "0151 23456789", // a national number (leading 0): no country code
    "+0151 23456789",
    "000151234567", // 00 then a leading 0
  ]) {
    assert.equal(normalizePhone(typed), null, JSON.stringify(typed));
  }
});

test("the limits are inclusive: 8 and 15 digits pass, 7 and 16 do not", () => {
  assert.equal(normalizePhone("12345678"), "+12345678");
  assert.equal(normalizePhone("1234567"), null);
  assert.equal(normalizePhone("123456789012345"), "+123456789012345");
  assert.equal(normalizePhone("1234567890123456"), null);
});
