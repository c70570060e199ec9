import { AttachmentKeys, LocalMedia, RemoteMedia, RemoteProfile } from "../network/connector";
import { LinkSnapshot } from "./link-health";

/** A Matrix event as the core needs it (client-server event format). */
export interface MatrixEvent {
  event_id: string;
  room_id: string;
  sender: string;
  type: string;
  state_key?: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  /** Redactions in room versions before 11 (from 11 on it is content.redacts). */
  redacts?: string;
}

export interface SendOptions {
  /** Stable transaction id: a retry with the same id never creates a second event. */
  txnId: string;
  /** Original timestamp (appservice timestamp massaging). */
  ts?: number;
  type?: string;
}

/**
 * What the core asks of the Matrix side. Implemented in src/matrix over appservice intents;
 * the core never builds HTTP requests itself.
 */
export interface MatrixPort {
  readonly botMxid: string;
  ghostMxid(remoteUserId: string): string;
  /** The remote user behind a ghost's Matrix id, or null when the id is not a ghost's. */
  remoteIdOfGhost(mxid: string): string | null;
  /** Registers the ghost if needed and brings its name and avatar up to date. Returns its Matrix id. */
  ensureGhost(remoteUserId: string, profile: RemoteProfile | null): Promise<string>;
  /** The ghost creates a direct-message room and invites the user. Returns the room id. */
  createDm(ghostMxid: string, invitee: string, name: string | null): Promise<string>;
  /**
   * The bot creates a group chat's room (not a DM): private, named, with the given power levels
   * (the bot keeps 100). Returns the room id.
   */
  createGroupRoom(name: string, topic: string | null, powerLevels: Record<string, number>): Promise<string>;
  invite(asMxid: string, roomId: string, userId: string): Promise<void>;
  join(asMxid: string, roomId: string): Promise<void>;
  leave(asMxid: string, roomId: string, reason?: string): Promise<void>;
  send(asMxid: string, roomId: string, content: Record<string, unknown>, opts: SendOptions): Promise<string>;
  /** Redacts an event; the txnId makes a retry a no-op. */
  redact(asMxid: string, roomId: string, eventId: string, opts: { txnId: string; reason?: string }): Promise<void>;
  /** Shows (or stops showing) asMxid as typing; Matrix ends it on its own after timeoutMs. */
  setTyping(asMxid: string, roomId: string, typing: boolean, timeoutMs: number): Promise<void>;
  /** A public read receipt (m.read) of asMxid up to eventId. */
  sendReadReceipt(asMxid: string, roomId: string, eventId: string): Promise<void>;
  /** A notice from the bridge (as the given sender, by default the bot if it is in the room, else the ghost). */
  /** `replyTo`: the event the notice is about (it is then shown as a reply to it). */
  notice(asMxid: string, roomId: string, text: string, txnId?: string, replyTo?: string): Promise<void>;
  /** Joined and invited members. */
  members(asMxid: string, roomId: string): Promise<string[]>;
  /** Every member's membership ("join", "invite", "leave", "ban", …), by Matrix id. */
  memberships(asMxid: string, roomId: string): Promise<Map<string, string>>;
  /** The room's name (m.room.name), or null when it has none. */
  roomName(asMxid: string, roomId: string): Promise<string | null>;
  /** The rooms the user has joined. */
  joinedRooms(asMxid: string): Promise<string[]>;
  /** The newest events of a room, oldest first, as seen by asMxid. */
  recentEvents(asMxid: string, roomId: string, limit: number): Promise<MatrixEvent[]>;
  /** A link a Matrix client opens, e.g. https://matrix.to/#/!room:server */
  roomLink(roomId: string): string;
  /** Whether the homeserver is reachable (for /health and the metrics). */
  health?(): LinkSnapshot;
  /** The homeserver's server name (the `via` of space links). */
  readonly serverName: string;
  /** The bot creates a Space (a room of type m.space) and invites the user. Returns its room id. */
  createSpace(name: string, topic: string, invitee: string): Promise<string>;
  /** Sets a state event (empty content clears link-like events such as m.space.child). */
  setState(asMxid: string, roomId: string, type: string, stateKey: string, content: Record<string, unknown>): Promise<void>;
  kick(asMxid: string, roomId: string, userId: string, reason?: string): Promise<void>;
  /** Sets a room's avatar (m.room.avatar) to a picture, uploaded as asMxid; null removes it. */
  setRoomAvatar(asMxid: string, roomId: string, picture: { data: Buffer; mimetype: string } | null): Promise<void>;
  /** A notice from the bot, written in markdown (bot DMs). */
  botNotice(roomId: string, markdown: string, txnId: string): Promise<void>;
  /** Streams a Matrix file (mxc://) into a temporary file of at most maxBytes; rejects with MediaError. */
  /** An encrypted attachment (`encryption`) is decrypted on the way, its hash checked (MediaError "bad_hash"). */
  downloadMedia(mxc: string, maxBytes: number, encryption?: AttachmentKeys): Promise<LocalMedia>;
  /** Uploads received media as asMxid for the room (as encrypted attachments when the room is encrypted) and returns the m.room.message content to send; rejects with MediaError. */
  mediaMessage(asMxid: string, roomId: string, file: LocalMedia, media: RemoteMedia, caption?: string): Promise<Record<string, unknown>>;
}
