/**
 * End-to-bridge encryption as the appservice uses it (docs/encryption.md): which rooms are
 * encrypted (their m.room.encryption state, cached until it or the membership changes), and the
 * EncryptionManager's encrypt/decrypt for the sending ghost's (or the bot's) own device.
 */
import { DecryptedEvent, EncryptionManager } from "../crypto/encryption-manager";
import { getLogger } from "../logging";

const log = getLogger("crypto");

export interface RoomEncryptionOptions {
  /** New portals start encrypted (encryption.default). */
  byDefault: boolean;
  /** Portals that are not encrypted are refused (encryption.require). */
  require: boolean;
  /** Reads the room's m.room.encryption state as asMxid: its content, or null when the room has none. */
  readEncryptionState: (roomId: string, asMxid: string) => Promise<Record<string, unknown> | null>;
}

export class RoomEncryption {
  /** Rooms known encrypted (never turned off again) or known plain until an m.room.encryption event arrives. */
  private readonly encrypted = new Map<string, boolean>();
  /** False after a failed homeserver check: the bridge runs unencrypted. */
  private active = true;

  constructor(
    readonly manager: EncryptionManager,
    private readonly opts: RoomEncryptionOptions,
  ) {}

  get enabled(): boolean {
    return this.active;
  }

  /** The homeserver cannot do it: nothing is encrypted or decrypted from now on. */
  disable(): void {
    this.active = false;
  }

  get byDefault(): boolean {
    return this.active && this.opts.byDefault;
  }

  get require(): boolean {
    return this.opts.require;
  }

  async isEncrypted(roomId: string, asMxid: string): Promise<boolean> {
    if (!this.active) return false;
    const known = this.encrypted.get(roomId);
    if (known !== undefined) return known;
    const state = await this.opts.readEncryptionState(roomId, asMxid);
    const encrypted = typeof state?.algorithm === "string";
    // An answer that raced an m.room.encryption event must not overwrite it.
    if (!this.encrypted.get(roomId)) this.encrypted.set(roomId, encrypted);
    return encrypted;
  }

  /** The room has (or just got) m.room.encryption: from now on everything sent there is encrypted. */
  markEncrypted(roomId: string): void {
    this.encrypted.set(roomId, true);
    this.manager.roomChanged(roomId);
  }

  /** Membership changed: the room key goes to the new members' devices, and rotates after a leave. */
  membershipChanged(roomId: string): void {
    this.manager.roomChanged(roomId);
  }

  /** The content and type to send for `type`/`content` as asMxid in the room (encrypted when the room is). */
  async outgoing(roomId: string, asMxid: string, type: string, content: Record<string, unknown>): Promise<{ type: string; content: Record<string, unknown> }> {
    if (!(await this.isEncrypted(roomId, asMxid))) return { type, content };
    const encrypted = await this.manager.encrypt(roomId, asMxid, type, content);
    // The relation stays readable to the homeserver (the spec: m.relates_to of encrypted events is not encrypted).
    const relation = content["m.relates_to"];
    if (relation !== undefined && encrypted["m.relates_to"] === undefined) encrypted["m.relates_to"] = relation;
    return { type: "m.room.encrypted", content: encrypted };
  }

  /** Decrypts an m.room.encrypted event as a bridged user in the room; DecryptionFailure when it cannot. */
  async decrypt(event: Record<string, unknown> & { room_id: string }, asMxid: string, waitMs?: number): Promise<DecryptedEvent> {
    const clear = await this.manager.decrypt(event.room_id, event, asMxid, waitMs);
    log.debug("decrypted an event", { room: event.room_id, eventId: event.event_id, type: clear.type });
    return clear;
  }
}
