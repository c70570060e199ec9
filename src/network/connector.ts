/**
 * The seam between the bridge core and a chat network. The core never sees the wire protocol;
 * a connector never sees Matrix. Our interop-gateway client is one connector; a real WhatsApp
 * gateway would be a second one implementing the same interfaces.
 *
 * Identifiers: a remote user id is the network's own id (for WhatsApp an E.164 number such
 * as "+4915123456789"); a chat id is opaque to the core. A Matrix user is always named by
 * its Matrix user id; the connector maps it to the network identity it enlisted.
 */

/**
 * A chat on the network. DMs have one remote participant. A group's participants are the remote
 * users the connector knows to be in it when it names the chat (for a message: its sender); the
 * whole membership is its GroupInfo (getGroup, onGroupChange).
 */
export interface ChatRef {
  id: string;
  kind: "dm" | "group";
  /** The remote users in the chat, not counting the Matrix user it is seen by. */
  participants: string[];
}

/** A member of a group: a remote user (`matrix` false, `id` the network's id) or a Matrix user of this bridge (`id` their Matrix id). */
export interface GroupMember {
  id: string;
  matrix: boolean;
  admin: boolean;
}

/** A group's state, always whole. Of two states of a group, the higher `rev` is the later. */
export interface GroupInfo {
  rev: number;
  name: string;
  /** Absent: no topic. */
  topic?: string;
  /** The group's picture; absent: none. Plain data (a group state is queued as JSON): its bytes come from `fetchGroupPicture(ref)`. */
  picture?: GroupPicture;
  /** Members of other networks or bridges are left out. */
  members: GroupMember[];
}

/** A group's picture: `id` changes whenever the picture does; `ref` is the connector's own description of where it is. */
export interface GroupPicture {
  id: string;
  mimetype: string;
  ref: string;
}

/** A group's membership or metadata changed (created, added, removed, left, name, topic, picture, admin). */
export interface RemoteGroupChange {
  /** Unique within the group and the same in every member's copy (so copies can be told apart from changes). */
  id: string;
  chat: ChatRef;
  change: string;
  /** Who made the change: a remote user id or a Matrix user id (absent when neither). */
  by?: string;
  /** The member the change concerns. */
  subject?: string;
  /** The state after the change. */
  group: GroupInfo;
  timestamp: number;
}

export type ConnectionState = { state: "connecting" } | { state: "connected" } | { state: "disconnected"; reason: string; retryInMs?: number };

export interface RemoteAvatar {
  /** Changes whenever the picture changes (e.g. its SHA-256); the core re-uploads only on change. */
  id: string;
  mimetype: string;
  fetch(): Promise<Buffer>;
}

export interface RemoteProfile {
  userId: string;
  displayName: string | null;
  avatar: RemoteAvatar | null;
}

/** Message content in the network-neutral form both sides convert to and from. */
export type RemoteContent =
  /** GFM-MIMI markdown; an emote starts with "/me " (our wire convention, docs/protocol.md). */
  | { type: "text"; markdown: string }
  | { type: "unsupported"; what: string; description: string }
  /** A photo, video, voice note, audio file or document; `caption` is GFM-MIMI markdown. */
  | { type: "media"; media: RemoteMedia; source: MediaSource; caption?: string };

/**
 * How an encrypted attachment (the spec's EncryptedFile) is decrypted: the JWK's `k`
 * (unpadded base64url, 32 bytes), the counter block `iv` and the SHA-256 of the ciphertext
 * (unpadded base64).
 */
export interface AttachmentKeys {
  key: string;
  iv: string;
  sha256: string;
}

/** Voice notes are recorded in the chat (WhatsApp's push-to-talk); audio is a sent sound file. */
export type MediaKind = "image" | "video" | "voice" | "audio" | "file";

/** What a piece of media is, apart from its bytes. */
export interface RemoteMedia {
  kind: MediaKind;
  /** Content type of the plaintext, e.g. "image/jpeg". */
  mimetype: string;
  filename: string;
  /** Plaintext bytes, when known before the transfer (the size limit is checked against it). */
  size?: number;
  width?: number;
  height?: number;
  durationMs?: number;
  /** Loudness along a voice note: up to 100 integers 0..1024. */
  waveform?: number[];
}

/** Where the bytes of a piece of media are. */
export type MediaSource =
  /** On the homeserver (Matrix → network, while the message waits in the outbound queue). */
  | { from: "matrix"; mxc: string; encryption?: AttachmentKeys }
  /** On the network; `ref` is the connector's own description, handed back to `downloadMedia`. */
  | { from: "network"; ref: string }
  /** A verified plaintext file on this machine, valid during the call that is given it. */
  | { from: "file"; path: string; size: number };

/** A temporary plaintext file; `release` deletes it. */
export interface LocalMedia {
  path: string;
  size: number;
  release(): Promise<void>;
}

export interface RemoteMessage {
  /** The network's id of the message, unique within the chat. */
  id: string;
  chat: ChatRef;
  sender: string;
  /** The sender's timestamp in ms (kept on the Matrix side). */
  timestamp: number;
  content: RemoteContent;
  /** The network id of the message this one replies to (absent: not a reply). */
  replyTo?: string;
}

/**
 * Something a user does to an earlier message, named by its network id (`target`). Networks
 * that allow one reaction per user per message (WhatsApp) replace the earlier one with a new one.
 */
export type MessageChange =
  /**
   * New content for the target; the target is always the first version, never an earlier edit.
   * `replyTo`: what the target replied to, for networks that repeat it (MIMI does).
   */
  | { type: "edit"; target: string; content: RemoteContent; replyTo?: string }
  /** The target is withdrawn for everyone. */
  | { type: "delete"; target: string; replyTo?: string }
  | { type: "reaction"; target: string; emoji: string }
  /** Withdraws the reaction whose network id is `reaction` from `target`. */
  | { type: "unreaction"; target: string; reaction: string };

/** A change made by a remote user. */
export interface RemoteChange {
  /** The network's id of the change itself (unique within the chat, like a message id). */
  id: string;
  chat: ChatRef;
  sender: string;
  timestamp: number;
  change: MessageChange;
}

/** A remote user has read these messages (network ids of messages the Matrix user sent). */
export interface RemoteReadReceipt {
  chat: ChatRef;
  sender: string;
  messageIds: string[];
  timestamp: number;
}

/** A remote user started or stopped typing. Live only: nothing is stored or retried. */
export interface RemoteTyping {
  chat: ChatRef;
  sender: string;
  typing: boolean;
}

/** The network confirms that something the bridge sent reached the recipient's side. */
export interface DeliveryReceipt {
  chat: ChatRef;
  /** The txnId the message or change was sent with. */
  txnId: string;
  /** The remote user it was delivered to. */
  recipient: string;
  timestamp: number;
}

export interface OutboundMessage {
  /** Stable idempotency key (the Matrix event id): sending it twice must deliver once. */
  txnId: string;
  content: RemoteContent;
  timestamp: number;
  /** The network id of the message replied to; the core leaves it out when the target was never bridged. */
  replyTo?: string;
}

/** A change the Matrix user makes to an earlier message (the core has checked the capabilities). */
export interface OutboundChange {
  /** Stable idempotency key (the Matrix event id of the edit, reaction or redaction). */
  txnId: string;
  change: MessageChange;
  timestamp: number;
}

export interface SendResult {
  /** The network's id for the sent message. */
  remoteId: string;
  timestamp: number;
}

/** Why the network refused a message; `retryable` false means retrying cannot help. */
export class NetworkError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = "NetworkError";
  }
}

/**
 * Media that could not be bridged. `reason` is for the user and completes a sentence such as
 * "clip.mp4 could not be sent: <reason>"; `retryable` says whether trying again later can help.
 */
export class MediaError extends Error {
  constructor(
    readonly code: string,
    readonly reason: string,
    readonly retryable = false,
  ) {
    super(reason);
    this.name = "MediaError";
  }
}

/** What the connector calls on the core. Each promise resolves once the event is durably handled. */
export interface NetworkEventHandler {
  /** A message for the Matrix user `receiver`. The connector acknowledges it to the network only after this resolves. */
  onMessage(receiver: string, message: RemoteMessage): Promise<void>;
  /** A remote user's name or avatar changed (or was first seen). */
  onProfile(profile: RemoteProfile): Promise<void>;
  onConnectionState(state: ConnectionState): void;
  /** The other side's encryption identity changed (reinstall, new phone): worth a notice. */
  onIdentityChange?(receiver: string, remoteUserId: string): Promise<void>;
  /**
   * The network turned `remoteUserId` away because `receiver` has Third-Party Chats off. Nothing
   * of their message reached the bridge; this only says who tried.
   */
  onRefused?(receiver: string, remoteUserId: string, timestamp: number): Promise<void>;
  /** Something for `receiver` that third-party chats do not carry was dropped on purpose (e.g. a status update). */
  onDropped?(receiver: string, what: string): void;
  /** An edit, deletion, reaction or withdrawn reaction. Acknowledged to the network after it resolves, like onMessage. */
  onChange?(receiver: string, change: RemoteChange): Promise<void>;
  onReadReceipt?(receiver: string, receipt: RemoteReadReceipt): Promise<void>;
  /** Must not block: typing is live, a late notice is worthless. */
  onTyping?(receiver: string, typing: RemoteTyping): void;
  /** Resolving acknowledges the receipt; it should resolve even when Matrix is unreachable (a status is not worth a stuck queue). */
  onDelivered?(receiver: string, receipt: DeliveryReceipt): Promise<void>;
  /** A group `receiver` is (or was, until this change) a member of changed. Acknowledged after it resolves, like onMessage. */
  onGroupChange?(receiver: string, change: RemoteGroupChange): Promise<void>;
}

/** What a chat takes of one kind of media: content types (patterns such as "image/*" or "*\/*") and a size limit. */
export interface MediaLimits {
  mimetypes: readonly string[];
  /** Plaintext bytes at most. */
  maxSize: number;
}

/**
 * What one chat supports, as the connector answers for it (after mautrix bridgev2 GetCapabilities
 * → RoomFeatures, and mautrix-whatsapp's capabilities table). The core checks these before it
 * queues anything; an absent feature means the chat has none, and the user is told instead.
 */
export interface ChatCapabilities {
  /** Text messages: UTF-8 bytes of markdown at most. */
  text: { maxLength: number };
  /** Media kinds the chat takes; a kind not listed is refused. Received media is bounded by the same limits. */
  media: Partial<Record<MediaKind, MediaLimits>>;
  /** Messages may name the message they reply to (OutboundMessage.replyTo). */
  replies: boolean;
  /** Only the sender may edit, and only for maxAgeMs after sending (0: no time limit). */
  edits?: { maxAgeMs: number };
  /** Only the sender may delete for everyone, and only for maxAgeMs after sending (0: no time limit). */
  deletes?: { maxAgeMs: number };
  /** How many reactions one user may have on one message; a new one beyond that replaces the oldest. */
  reactions?: { maxPerUser: number };
  readReceipts: boolean;
  typing: boolean;
  /** The network reports when a sent message reached the recipient (onDelivered). */
  deliveryReceipts: boolean;
}

/** The largest file a chat takes of any kind (what may be fetched before the kind is known for sure). */
export function maxMediaSize(caps: ChatCapabilities): number {
  return Math.max(0, ...Object.values(caps.media).map((m) => m.maxSize));
}

/** Whether a content type matches one of the patterns ("image/*", "*\/*", "image/png"). */
export function mimetypeAccepted(mimetype: string, patterns: readonly string[]): boolean {
  const [type] = mimetype.toLowerCase().split("/");
  return patterns.some((p) => {
    const pattern = p.toLowerCase();
    return pattern === "*/*" || pattern === mimetype.toLowerCase() || (pattern.endsWith("/*") && pattern.slice(0, -2) === type);
  });
}

/** A user-typed identifier that the connector understood, in its canonical form (a phone number in E.164). */
export type IdentifierCheck = { ok: true; identifier: string } | { ok: false; reason: string };

export interface NetworkConnector {
  /** The network's name as users know it ("WhatsApp"), for every text that names it. */
  readonly networkName: string;
  /** What this chat supports (message kinds, limits, edits, …); cheap, called before anything is queued. */
  getCapabilities(chat: ChatRef): ChatCapabilities;
  /**
   * Checks a user-typed identifier (a phone number) and returns its canonical form, or why it
   * is not one; no network request (bridgev2 IdentifierValidatingNetwork).
   */
  validateIdentifier(input: string): IdentifierCheck;
  /** Connects and starts delivering events; resolves once the first connection attempt finished (it keeps retrying on its own). */
  start(handler: NetworkEventHandler): Promise<void>;
  stop(): Promise<void>;
  connectionState(): ConnectionState;
  /**
   * Makes a Matrix user known on the network (identity, keys, login), with the Third-Party Chats
   * setting stored for them: a user who has it off is known but not reachable. Idempotent.
   */
  ensureUser(matrixUserId: string, displayName: string | null): Promise<void>;
  /** Tells the network whether the user accepts Third-Party Chats (whether others may reach them). */
  setThirdPartyChats(matrixUserId: string, on: boolean): Promise<void>;
  /** Removes a Matrix user's identity and keys from the network and from local storage. */
  removeUser(matrixUserId: string): Promise<void>;
  /** Looks up a remote user by a human identifier (a phone number); null when there is none. */
  resolveIdentifier(matrixUserId: string, identifier: string): Promise<RemoteProfile | null>;
  getProfile(remoteUserId: string): Promise<RemoteProfile | null>;
  /** The DM chat between a Matrix user and a remote user (deterministic: both sides name it alike). */
  dmChat(matrixUserId: string, remoteUserId: string): ChatRef;
  /** A group's current state as the member `matrixUserId` sees it; null when they are not a member (or it does not exist). */
  getGroup(matrixUserId: string, chatId: string): Promise<GroupInfo | null>;
  /**
   * Creates a group on the network with the Matrix user as its admin and these remote users as
   * members. Members the network would not add are left out and listed in `refused` with its
   * reason; rejects with NetworkError when the group cannot be created at all.
   */
  createGroup(matrixUserId: string, name: string, members: string[]): Promise<{ chat: ChatRef; group: GroupInfo; refused: { id: string; reason: string }[] }>;
  /**
   * The Matrix user (an admin) adds a member to the group: a remote user, or (`matrix`) another
   * Matrix user of this bridge; rejects with NetworkError saying why not (its `code`:
   * `not_opted_in`, `third_party_disabled`, `forbidden`, …).
   */
  addToGroup(matrixUserId: string, chatId: string, member: { id: string; matrix: boolean }): Promise<void>;
  /** The bytes of a group's picture (GroupInfo.picture.ref), checked against what the group state says of them. */
  fetchGroupPicture(ref: string): Promise<Buffer>;
  /** The Matrix user (an admin) removes a member from the group; rejects with NetworkError saying why not. */
  removeFromGroup(matrixUserId: string, chatId: string, member: { id: string; matrix: boolean }): Promise<void>;
  /** The Matrix user (an admin) changes the group's name or topic ("" removes it); rejects with NetworkError saying why not. */
  updateGroup(matrixUserId: string, chatId: string, update: { name?: string; topic?: string }): Promise<void>;
  /** The Matrix user leaves the group on the network (a no-op when they are not a member); rejects with NetworkError. */
  leaveGroup(matrixUserId: string, chatId: string): Promise<void>;
  /**
   * Sends a message; resolves when the network accepted it, rejects with NetworkError (or
   * MediaError for media it could not prepare). Media content arrives with `source.from === "file"`.
   */
  sendMessage(matrixUserId: string, chat: ChatRef, message: OutboundMessage): Promise<SendResult>;
  /** Sends an edit, deletion, reaction or withdrawn reaction; called only for what the chat's capabilities allow; as sendMessage. */
  sendChange(matrixUserId: string, chat: ChatRef, change: OutboundChange): Promise<SendResult>;
  /** Tells the other side (in a group: every other member) the Matrix user read these messages (network ids); called only with `readReceipts`; rejects with NetworkError. */
  sendReadReceipt(matrixUserId: string, chat: ChatRef, messageIds: string[]): Promise<void>;
  /** Live typing notice (in a group: to every other member), called only with `typing`; returns false when it could not be sent now (it is never queued). */
  sendTyping(matrixUserId: string, chat: ChatRef, typing: boolean): boolean;
  /**
   * Fetches the media of a received message (`source.ref`) for `receiver` into a verified
   * temporary file of at most `maxBytes`; rejects with MediaError. Called only for chats that take media.
   */
  downloadMedia(receiver: string, ref: string, maxBytes: number): Promise<LocalMedia>;
}
