/**
 * The wording of Third-Party Chats opt-in, in one place: the one short explanation a user gets
 * on first contact, and the notices about what was refused while the chats were off.
 * Markdown, rendered by the Matrix side.
 */

/** The one short explanation, given once per user (first bot contact or first refused contact). */
export function explanation(enabled: boolean, network: string): string {
  const what = `**Third-Party Chats** connect you with ${network} users: they write to you from ${network} and you answer here; messages stay end-to-end encrypted on the way.`;
  return enabled
    ? `${what} They are **on** for you: ${network} users can write to you, and \`start <phone>\` opens a chat. Say \`disable\` to turn them off.`
    : `${what} They are **off** for you: ${network} users who try to write to you are told you don't accept third-party chats, and their messages are not kept for later. Say \`enable\` to turn them on (and \`disable\` to turn them off again).`;
}

/** A remote user was turned away by the network because the user has the chats off. */
export function refusedNotice(who: string, firstExplanation: boolean, network: string): string {
  if (firstExplanation) return `${who} tried to write to you on ${network}.\n\n${explanation(false, network)}`;
  return `${who} tried to write to you on ${network}, but your Third-Party Chats are off, so their message was refused and not kept. Say \`enable\` to receive messages from ${network} users.`;
}

/** Why something the user wrote in a portal was not sent while the chats are off. */
export function offNotice(botMxid: string, network: string): string {
  return `Not sent: your Third-Party Chats are off, so nothing you write here reaches ${network}, now or later. Say "enable" in your chat with ${botMxid} to turn them on.`;
}
