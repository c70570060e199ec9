/** Phone number handling for WhatsApp-side identifiers (pure). */

/** Normalises what a user typed ("+49 151 2345-6789", "0049151...") to E.164 ("+49151..."), or null. */
export function normalizePhone(input: string): string | null {
  let text = input.trim();
  if (text.startsWith("00")) text = "+" + text.slice(2);
  if (!/^\+?[0-9 ().\-/]+$/.test(text)) return null;
  const digits = text.replace(/[^0-9]/g, "");
  // E.164 allows at most 15 digits; real country code + subscriber numbers have at least 8.
  if (digits.length < 8 || digits.length > 15 || digits.startsWith("0")) return null;
  return "+" + digits;
}
