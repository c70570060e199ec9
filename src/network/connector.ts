/**
 * The seam between the bridge core and a chat network. The core never sees the wire protocol;
 * a connector never sees Matrix. Our interop-gateway client is one connector; a real WhatsApp
 * gateway would be a second one implementing the same interfaces.
 *
 * Identifiers: a remote user id is the network's own id (for WhatsApp an E.164 number such
 * as "+4915123456789"); a chat id is opaque to the core. A Matrix user is always named by
 * its Matrix user id; the connector maps it to the network identity it enlisted.
 */

/** A chat on the network. DMs have one remote participant; groups (later) have several. */
export interface ChatRef {
  id: string;
  kind: "dm" | "group";
  /** The remote users in the chat, not counting the Matrix user it is seen by. */
  participants: string[];
}

export type ConnectionState =
  | { state: "connecting" }
  | { state: "connected" }
  | { state: "disconnected"; reason: string; retryInMs?: number };

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
  | { from: "matrix"; mxc: string }
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
}

export interface OutboundMessage {
  /** Stable idempotency key (the Matrix event id): sending it twice must deliver once. */
  txnId: string;
  content: RemoteContent;
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
}

/** Limits the core checks before calling the connector (see mautrix capabilities). */
export interface NetworkCapabilities {
  maxTextLength: number;
  maxMediaSize: number;
}

export interface NetworkConnector {
  readonly capabilities: NetworkCapabilities;
  /** Connects and starts delivering events; resolves once the first connection attempt finished (it keeps retrying on its own). */
  start(handler: NetworkEventHandler): Promise<void>;
  stop(): Promise<void>;
  connectionState(): ConnectionState;
  /** Makes a Matrix user reachable on the network (identity, keys, login). Idempotent. */
  ensureUser(matrixUserId: string, displayName: string | null): Promise<void>;
  /** Removes a Matrix user's identity and keys from the network and from local storage. */
  removeUser(matrixUserId: string): Promise<void>;
  /** Looks up a remote user by a human identifier (a phone number); null when there is none. */
  resolveIdentifier(matrixUserId: string, identifier: string): Promise<RemoteProfile | null>;
  getProfile(remoteUserId: string): Promise<RemoteProfile | null>;
  /** The DM chat between a Matrix user and a remote user (deterministic: both sides name it alike). */
  dmChat(matrixUserId: string, remoteUserId: string): ChatRef;
  /**
   * Sends a message; resolves when the network accepted it, rejects with NetworkError (or
   * MediaError for media it could not prepare). Media content arrives with `source.from === "file"`.
   */
  sendMessage(matrixUserId: string, chat: ChatRef, message: OutboundMessage): Promise<SendResult>;
  /**
   * Fetches the media of a received message (`source.ref`) for `receiver` into a verified
   * temporary file of at most `maxBytes`; rejects with MediaError. Absent on networks without media.
   */
  downloadMedia?(receiver: string, ref: string, maxBytes: number): Promise<LocalMedia>;
}
