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
  | { type: "unsupported"; what: string; description: string };

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
  /** Sends a message; resolves when the network accepted it, rejects with NetworkError. */
  sendMessage(matrixUserId: string, chat: ChatRef, message: OutboundMessage): Promise<SendResult>;
}
