/**
 * Portal rooms: finding, creating, adopting (a room a user made by inviting a ghost) and closing
 * them, and the one place that knows what kind of chat a portal is (`voiceOf`).
 */
import { getLogger } from "../logging";
import { ChatRef, NetworkConnector } from "../network/connector";
import { BridgeStore, PortalRow } from "../store";
import { KeyedQueue } from "../util/keyed-queue";
import { Access } from "./access";
import { BridgeUserError } from "./failure";
import { InboxManager } from "./inbox";
import { MatrixEvent, MatrixPort } from "./matrix-port";

const log = getLogger("portals");

export type OpenPortal = PortalRow & { roomId: string };

/**
 * The remote user who speaks for the bridge in a chat's room (its notices and statuses come
 * from their ghost) and who creates the room. The only place that decides by the kind of chat:
 * a DM's one other participant. Groups (issue 15) will answer here, not in the pipelines.
 */
export function voiceOf(chat: Pick<ChatRef, "kind" | "participants">): string {
  if (chat.kind !== "dm" || chat.participants.length === 0) throw new BridgeUserError("group chats are not supported yet");
  return chat.participants[0]!;
}

/** What the portals need of the pipelines, given as callbacks so that neither imports the other. */
export interface PortalHooks {
  /** Accepts a Matrix message the user sent before the ghost joined (as if it had just arrived). */
  acceptEarlyMessage(portal: PortalRow, event: MatrixEvent): Promise<void>;
  /** Starts sending what waits in a portal's inbound queue. */
  drainInbound(portalId: number): void;
}

export class Portals {
  private readonly locks = new KeyedQueue();

  constructor(
    private readonly store: BridgeStore,
    private readonly matrix: MatrixPort,
    private readonly network: NetworkConnector,
    private readonly access: Access,
    readonly inbox: InboxManager,
    private readonly hooks: PortalHooks,
  ) {}

  /** The chat a portal bridges. */
  chatOf(portal: PortalRow): ChatRef {
    return { id: portal.remoteChatId, kind: portal.kind, participants: this.store.portals.participants(portal.id) };
  }

  /** The ghost that speaks for the bridge in a portal's room. */
  ghostOf(portal: PortalRow): string {
    return this.matrix.ghostMxid(voiceOf(this.chatOf(portal)));
  }

  /** Finds or creates the portal (and its room) for a chat as seen by one Matrix user. */
  async ensurePortal(receiver: string, chat: ChatRef): Promise<OpenPortal> {
    return this.locks.run(`${chat.id}|${receiver}`, async () => {
      const portal = this.store.portals.getOrCreate(chat.id, receiver, chat.kind, chat.participants);
      if (portal.roomId) return portal as OpenPortal;
      const voice = voiceOf(chat);
      await this.network.ensureUser(receiver, null);
      const ghost = await this.ghostFor(voice);
      const orphan = await this.orphanDm(ghost, receiver);
      const roomId = orphan ?? (await this.matrix.createDm(ghost, receiver, null));
      this.store.portals.setRoom(portal.id, roomId);
      log.info(orphan ? "reused the portal room created before a restart" : "created portal room", { portal: portal.id, roomId });
      await this.listInInbox({ ...portal, roomId });
      return { ...portal, roomId };
    });
  }

  /**
   * A DM of the ghost with the receiver that no portal maps: the room a run that died between
   * creating it and recording it left behind. Reusing it keeps the chat to one room.
   */
  private async orphanDm(ghost: string, receiver: string): Promise<string | null> {
    for (const roomId of await this.matrix.joinedRooms(ghost)) {
      if (this.store.portals.byRoom(roomId)) continue;
      const members = await this.matrix.members(ghost, roomId);
      if (members.length === 2 && members.includes(receiver)) return roomId;
    }
    return null;
  }

  /** A Space problem must not stop a chat from working: it is logged, and `inbox dedicated` repairs it. */
  private async listInInbox(portal: OpenPortal): Promise<void> {
    await this.inbox.portalAdded(portal).catch((err: Error) => log.warn("could not add a portal to the user's space", { portal: portal.id, error: err.message }));
  }

  /** The ghost of a remote user, registered with their profile the first time it is needed. */
  async ghostFor(remoteUserId: string): Promise<string> {
    const known = this.store.ghosts.get(remoteUserId);
    if (known?.registered && known.displayName) return known.mxid;
    const profile = await this.network.getProfile(remoteUserId).catch((err: Error) => {
      log.warn("could not fetch a remote profile", { remoteUserId, error: err.message });
      return null;
    });
    return this.matrix.ensureGhost(remoteUserId, profile);
  }

  /**
   * A Matrix user invited a ghost to a room ("Start chat" in Element). The room becomes the
   * portal unless the chat already has one: then what was said here is forwarded there and the
   * ghost points the user to it and leaves, so there is only ever one room per chat.
   */
  async onGhostInvited(roomId: string, inviter: string, ghostMxid: string, isDirect: boolean): Promise<void> {
    const remoteId = this.matrix.remoteIdOfGhost(ghostMxid);
    if (!remoteId) return;
    // Stable transaction ids: a replayed invite (after a crash) does not repeat the notices.
    const txn = (what: string) => `invite.${what}.${ghostMxid}`;
    const reject = async (reason: string) => {
      await this.matrix.join(ghostMxid, roomId);
      await this.matrix.notice(ghostMxid, roomId, reason, txn("refused"));
      await this.matrix.leave(ghostMxid, roomId, reason);
    };
    if (!this.access.mayUse(inviter)) {
      log.info("refused a chat from a user who may not use the bridge", { user: inviter });
      return reject(
        `Sorry, you are not allowed to use this bridge, so this chat cannot reach ${this.network.networkName}. Ask the bridge's administrator if you think you should be.`,
      );
    }
    this.access.admitUser(inviter);
    if (!isDirect) return reject("Only direct chats can be bridged for now; start a direct chat with this contact instead.");
    await this.network.ensureUser(inviter, null);
    const profile = await this.network.getProfile(remoteId);
    if (!profile) return reject(`${remoteId} is not reachable through Third-Party Chats.`);
    const chat = this.network.dmChat(inviter, remoteId);
    await this.locks.run(`${chat.id}|${inviter}`, async () => {
      await this.matrix.ensureGhost(remoteId, profile);
      await this.matrix.join(ghostMxid, roomId);
      const existing = this.store.portals.byChat(chat.id, inviter);
      if (existing?.roomId && existing.roomId !== roomId) {
        const forwarded = await this.adoptEarlyMessages(roomId, existing, ghostMxid);
        await this.matrix.notice(
          ghostMxid,
          roomId,
          `You already have a chat with ${profile.displayName ?? remoteId}: ${this.matrix.roomLink(existing.roomId)} — please continue there.` +
            (forwarded ? ` ${forwarded} message(s) sent here were delivered there.` : ""),
          txn("elsewhere"),
        );
        await this.matrix.leave(ghostMxid, roomId, "this chat already has a room");
        return;
      }
      const portal = this.store.portals.getOrCreate(chat.id, inviter, chat.kind, chat.participants);
      this.store.portals.setRoom(portal.id, roomId);
      log.info("adopted a user-created room as portal", { portal: portal.id, roomId });
      await this.listInInbox({ ...portal, roomId });
      await this.adoptEarlyMessages(roomId, portal, ghostMxid);
    });
  }

  /** Bridges messages the user sent in a room before the ghost joined it (the homeserver did not push those to us). */
  private async adoptEarlyMessages(roomId: string, portal: PortalRow, ghostMxid: string): Promise<number> {
    const events = await this.matrix.recentEvents(ghostMxid, roomId, 50);
    let count = 0;
    for (const event of events) {
      if (event.type !== "m.room.message" || event.sender !== portal.receiver) continue;
      if (this.store.outbound.wasProcessed(event.event_id)) continue;
      await this.hooks.acceptEarlyMessage(portal, event);
      count++;
    }
    return count;
  }

  /**
   * The portal's user left its room: the portal is closed (the ghost leaves, the mapping is
   * deleted). A later message from the remote side opens a fresh room and invites them again.
   */
  async onUserLeft(roomId: string, userId: string): Promise<void> {
    const portal = this.store.portals.byRoom(roomId);
    if (!portal || portal.receiver !== userId) return;
    const ghost = this.ghostOf(portal);
    await this.inbox.portalRemoved(portal).catch((err: Error) => log.warn("could not remove a portal from the user's space", { portal: portal.id, error: err.message }));
    // Messages already acknowledged to the network and not yet shown go to a fresh room, as
    // they would have had they come a moment later: moved in the transaction that closes the portal.
    const { reopened, waiting } = this.store.transaction(() => {
      const waiting = this.store.inbound.messagesOf(portal.id);
      const participants = this.store.portals.participants(portal.id);
      this.store.portals.delete(portal.id);
      if (waiting.length === 0) return { reopened: undefined, waiting: 0 };
      const fresh = this.store.portals.getOrCreate(portal.remoteChatId, portal.receiver, portal.kind, participants);
      this.store.inbound.requeue(waiting, fresh.id);
      return { reopened: fresh, waiting: waiting.length };
    });
    log.info("portal closed because its user left", { portal: portal.id, roomId, waiting });
    await this.matrix.leave(ghost, roomId, "the chat was closed").catch(() => undefined);
    if (reopened) this.hooks.drainInbound(reopened.id);
  }

  /** `start <identifier>`: finds the remote user and returns the portal room (creating it and inviting the user). */
  async startChat(userId: string, input: string): Promise<{ roomId: string; name: string; created: boolean }> {
    const checked = this.network.validateIdentifier(input);
    if (!checked.ok) throw new BridgeUserError(checked.reason);
    const identifier = checked.identifier;
    const user = this.access.admitUser(userId);
    if (!user.thirdPartyEnabled) throw new BridgeUserError("your Third-Party Chats are off; say `enable` first", "conflict");
    await this.network.ensureUser(userId, null);
    const profile = await this.network.resolveIdentifier(userId, identifier);
    if (!profile) throw new BridgeUserError(`${identifier} is not on ${this.network.networkName} or does not accept Third-Party Chats`, "not_found");
    const chat = this.network.dmChat(userId, profile.userId);
    const existed = this.store.portals.byChat(chat.id, userId)?.roomId;
    await this.matrix.ensureGhost(profile.userId, profile);
    const portal = await this.ensurePortal(userId, chat);
    return { roomId: portal.roomId, name: profile.displayName ?? identifier, created: !existed };
  }

  /** The user's chats, for `list`. */
  listChats(userId: string): { roomId: string; remoteUserId: string; name: string }[] {
    return this.store.portals
      .forReceiver(userId)
      .filter((p) => p.roomId)
      .map((p) => {
        const remoteUserId = voiceOf(this.chatOf(p));
        return { roomId: p.roomId!, remoteUserId, name: this.store.ghosts.get(remoteUserId)?.displayName ?? remoteUserId };
      });
  }
}
