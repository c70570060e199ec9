/**
 * Portal rooms: finding, creating, adopting (a room a user made by inviting a ghost) and closing
 * them, and the one place that knows what kind of chat a portal is (`voiceOf`, `ghostOf`,
 * `isMember`). A DM's portal is one room per Matrix user; a group's is one room for the whole
 * group, created by the bot, with a ghost per WhatsApp member and the group's Matrix users invited.
 */
import { getLogger } from "../logging";
import { ChatRef, GroupInfo, NetworkConnector, NetworkError, RemoteGroupChange } from "../network/connector";
import { BridgeStore, PortalRow } from "../store";
import { KeyedQueue } from "../util/keyed-queue";
import { Access } from "./access";
import { BridgeUserError } from "./failure";
import { InboxManager } from "./inbox";
import { MatrixEvent, MatrixPort } from "./matrix-port";

const log = getLogger("portals");

export type OpenPortal = PortalRow & { roomId: string };

/** One of a user's chats as `list` and the provisioning API show it: a 1:1 chat with a remote user, or a group (its WhatsApp members counted). */
export type ChatListing =
  { kind: "dm"; roomId: string; remoteUserId: string; name: string } | { kind: "group"; roomId: string; remoteChatId: string; name: string; members: number };

/**
 * The remote user who speaks for the bridge in a DM's room (its notices and statuses come from
 * their ghost) and who creates the room: the DM's one other participant. A group's room is the
 * bot's (Portals.ghostOf).
 */
export function voiceOf(chat: Pick<ChatRef, "kind" | "participants">): string {
  if (chat.kind !== "dm" || chat.participants.length === 0) throw new Error("only a DM has one remote user who speaks for it");
  return chat.participants[0]!;
}

/** The lock under which group rooms are made or adopted. */
const GROUP_ROOMS = "group-rooms";

/** Who the network would not add to a group, and why, in one line. */
export function refusedText(refused: readonly { id: string; reason: string }[]): string {
  return refused.map((r) => `${r.id} ${r.reason}`).join("; ");
}

/** Power level of a group's admins in its room (mautrix-whatsapp gives them moderator). */
export const GROUP_ADMIN_POWER = 50;

/** A group room's power levels, the bot's and the admins' included (whole: m.room.power_levels replaces the earlier content). */
function groupPowerLevels(bot: string, admins: Record<string, number>): Record<string, unknown> {
  return {
    users: { ...admins, [bot]: 100 },
    users_default: 0,
    events_default: 0,
    state_default: 50,
    ban: 50,
    kick: 50,
    redact: 50,
    invite: 0,
    events: {
      "m.room.name": 50,
      "m.room.topic": 50,
      "m.room.avatar": 50,
      "m.room.power_levels": 100,
      "m.room.history_visibility": 100,
      "m.room.encryption": 100,
      "m.room.tombstone": 100,
      "m.room.server_acl": 100,
    },
  };
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

  /** Who speaks for the bridge in a portal's room: a DM's ghost, a group's bot. */
  ghostOf(portal: PortalRow): string {
    return portal.kind === "group" ? this.matrix.botMxid : this.matrix.ghostMxid(voiceOf(this.chatOf(portal)));
  }

  /** Whether a Matrix user speaks for themselves in the portal: a DM's user, a member of a group. */
  isMember(portal: PortalRow, mxid: string): boolean {
    return portal.kind === "group" ? this.store.portals.isMember(portal.id, mxid) : portal.receiver === mxid;
  }

  /** Finds or creates the portal (and its room) for a chat as seen by one Matrix user (for a group: the group's one portal, with the user in it). */
  async ensurePortal(receiver: string, chat: ChatRef, group?: GroupInfo): Promise<OpenPortal> {
    if (chat.kind === "group") return this.ensureGroupPortal(receiver, chat, group);
    return this.locks.run(`${chat.id}|${receiver}`, async () => {
      const portal = this.store.portals.getOrCreate(chat.id, receiver, "dm", chat.participants);
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
   * A group's one portal, its room created by the bot the first time a member's account hears of
   * it (named like the group, a ghost joined for each WhatsApp member, admins raised), and
   * `receiver` invited to it as a member. `group` is the state the caller has; without it the
   * network is asked. Rejects when the network says the receiver is not a member.
   */
  private async ensureGroupPortal(receiver: string, chat: ChatRef, group?: GroupInfo): Promise<OpenPortal> {
    const known = this.store.portals.byGroup(chat.id);
    // Rooms of groups are made one at a time (GROUP_ROOMS), so that a room being adopted for a group is never made twice.
    const open = known?.roomId
      ? (known as OpenPortal)
      : await this.locks.run(GROUP_ROOMS, async () => {
          const portal = this.store.portals.getOrCreateGroup(chat.id);
          if (portal.roomId) return portal as OpenPortal;
          const state = group ?? (await this.network.getGroup(receiver, chat.id));
          if (!state) throw new Error("the network does not count this user as a member of the group");
          const roomId = await this.matrix.createGroupRoom(state.name, state.topic ?? null, await this.adminPowers(state));
          this.store.portals.setRoom(portal.id, roomId);
          log.info("created a group's portal room", { portal: portal.id, roomId });
          const created = { ...portal, roomId };
          await this.applyGroupState(created, state);
          return this.store.portals.get(portal.id) as OpenPortal;
        });
    await this.addMatrixMember(open, receiver);
    return open;
  }

  /** Raised power levels of a group's admins, by Matrix id. */
  private async adminPowers(state: GroupInfo): Promise<Record<string, number>> {
    const powers: Record<string, number> = {};
    for (const m of state.members) if (m.admin) powers[m.matrix ? m.id : this.matrix.ghostMxid(m.id)] = GROUP_ADMIN_POWER;
    return powers;
  }

  /** A Matrix user of the bridge is a member of the group: remembered, and invited unless in the room already (a member may have invited them). */
  private async addMatrixMember(portal: OpenPortal, mxid: string): Promise<void> {
    if (!this.store.portals.addMember(portal.id, mxid)) return;
    this.access.admitUser(mxid);
    const membership = (await this.matrix.memberships(this.matrix.botMxid, portal.roomId)).get(mxid);
    if (membership !== "join" && membership !== "invite") await this.matrix.invite(this.matrix.botMxid, portal.roomId, mxid);
    await this.listInInbox(portal, mxid);
    log.info("a Matrix user of the bridge joined a group's portal", { portal: portal.id });
  }

  /**
   * Makes a group's room show a state of the group (a newer one than shown before, by rev): its
   * name and topic, a ghost in the room for each WhatsApp member and none for those gone, the
   * Matrix members invited and those gone removed, the admins' power levels, its picture. A name,
   * topic or picture a Matrix member set in this room (`change.by`) is there already. Repeating it
   * after a crash half way repeats nothing already done: it compares with the room's real members.
   */
  async applyGroupState(portal: OpenPortal, state: GroupInfo, change?: RemoteGroupChange): Promise<void> {
    const bot = this.matrix.botMxid;
    const roomId = portal.roomId;
    const current = this.store.portals.get(portal.id);
    if (!current || state.rev <= current.groupRev) return;
    // In a room a user made and the bot was invited to, the bot may lack the power for some of this.
    const privileged = (what: string, op: () => Promise<void>) =>
      op().catch((err: { errcode?: string; body?: { errcode?: string }; message?: string }) => {
        // The homeserver's refusal, or the appservice library's own check of the bot's power level.
        if ((err.errcode ?? err.body?.errcode) !== "M_FORBIDDEN" && !/power level/i.test(err.message ?? "")) throw err;
        log.warn("the bot lacks the power in a group's room to do this", { portal: portal.id, what });
      });
    const fromRoom = change?.by !== undefined && this.store.portals.isMember(portal.id, change.by);
    if (current.name !== null && current.name !== state.name && !fromRoom)
      await privileged("name", () => this.matrix.setState(bot, roomId, "m.room.name", "", { name: state.name }));
    if (change?.change === "topic" && !fromRoom) await privileged("topic", () => this.matrix.setState(bot, roomId, "m.room.topic", "", { topic: state.topic ?? "" }));
    // A new room shows the picture the group has; later, a picture event shows the new one (or none).
    if (change ? change.change === "picture" : state.picture !== undefined) await this.showPicture(portal, state, privileged);
    const membership = await this.matrix.memberships(bot, roomId);
    const inRoom = (mxid: string) => membership.get(mxid) === "join" || membership.get(mxid) === "invite";
    const remote = state.members.filter((m) => !m.matrix).map((m) => m.id);
    const ghosts = new Set<string>();
    for (const id of remote) {
      const ghost = await this.ghostFor(id);
      ghosts.add(ghost);
      if (membership.get(ghost) === "invite") await this.matrix.join(ghost, roomId);
      else if (membership.get(ghost) !== "join") await this.joinGhost(roomId, ghost);
    }
    for (const [mxid] of membership) {
      if (inRoom(mxid) && this.matrix.remoteIdOfGhost(mxid) !== null && !ghosts.has(mxid)) await this.matrix.leave(mxid, roomId, "left the group");
    }
    const matrixMembers = new Set(state.members.filter((m) => m.matrix).map((m) => m.id));
    for (const mxid of this.store.portals.members(portal.id)) {
      if (matrixMembers.has(mxid)) continue;
      // No longer in the group on the network: out of its room (and their Space) too.
      await this.unlistFromInbox(portal, mxid);
      this.store.portals.removeMember(portal.id, mxid);
      if (inRoom(mxid)) await privileged("kick", () => this.matrix.kick(bot, roomId, mxid, "no longer a member of the group"));
    }
    for (const mxid of matrixMembers) {
      // Members who have not heard of the group through their own account yet are invited once they do.
      if (this.store.portals.isMember(portal.id, mxid) && !inRoom(mxid)) await this.matrix.invite(bot, roomId, mxid);
    }
    const powers = groupPowerLevels(bot, await this.adminPowers(state));
    await privileged("power levels", () => this.matrix.setState(bot, roomId, "m.room.power_levels", "", powers));
    this.store.portals.setGroupState(portal.id, state.rev, state.name, remote);
    log.info("group state shown in its room", { portal: portal.id, rev: state.rev, members: state.members.length });
  }

  /** The group's picture as the room's avatar (none: the room has none); a picture that cannot be fetched is logged and left out. */
  private async showPicture(portal: OpenPortal, state: GroupInfo, privileged: (what: string, op: () => Promise<void>) => Promise<void>): Promise<void> {
    const picture = state.picture;
    let data: Buffer | null = null;
    if (picture) {
      try {
        data = await this.network.fetchGroupPicture(picture.ref);
      } catch (err) {
        log.warn("could not fetch a group's picture", { portal: portal.id, error: (err as Error).message });
        return;
      }
    }
    await privileged("picture", () => this.matrix.setRoomAvatar(this.matrix.botMxid, portal.roomId, picture && data ? { data, mimetype: picture.mimetype } : null));
  }

  /** A remote user who writes in a group is in its room (a message can come before the state that adds them was shown). */
  async ensureInGroupRoom(portal: OpenPortal, remoteUserId: string): Promise<void> {
    if (this.store.portals.participants(portal.id).includes(remoteUserId)) return;
    await this.joinGhost(portal.roomId, await this.ghostFor(remoteUserId));
  }

  /** A ghost removed from a group's room whose remote user is still in the group comes back. */
  async rejoinGhost(portal: OpenPortal, ghost: string): Promise<void> {
    await this.joinGhost(portal.roomId, ghost).catch((err: Error) => log.warn("could not bring a ghost back into a group's room", { portal: portal.id, error: err.message }));
  }

  /** The bot invites a ghost into a group's (private) room, and the ghost joins. */
  private async joinGhost(roomId: string, ghost: string): Promise<void> {
    await this.matrix.invite(this.matrix.botMxid, roomId, ghost);
    await this.matrix.join(ghost, roomId);
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
  private async listInInbox(portal: OpenPortal, member?: string): Promise<void> {
    await this.inbox.portalAdded(portal, member).catch((err: Error) => log.warn("could not add a portal to the user's space", { portal: portal.id, error: err.message }));
  }

  private async unlistFromInbox(portal: PortalRow, member: string): Promise<void> {
    await this.inbox.portalRemoved(portal, member).catch((err: Error) => log.warn("could not remove a portal from the user's space", { portal: portal.id, error: err.message }));
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
    // The bridge's own invites (the bot bringing a group's members in) need nothing more.
    if (!remoteId || inviter === this.matrix.botMxid) return;
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
    if (!isDirect) return this.onGhostInvitedToGroup(roomId, inviter, ghostMxid, remoteId, reject);
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
      const portal = this.store.portals.getOrCreate(chat.id, inviter, "dm", chat.participants);
      this.store.portals.setRoom(portal.id, roomId);
      log.info("adopted a user-created room as portal", { portal: portal.id, roomId });
      await this.listInInbox({ ...portal, roomId });
      await this.adoptEarlyMessages(roomId, portal, ghostMxid);
    });
  }

  /**
   * A Matrix user invited a ghost into a room that is not a DM. Once the room has two ghosts
   * (joined or invited), it becomes a WhatsApp group: created on the network with the user as its
   * admin, named like the room, and this room its portal (the bot joins it; without power in a
   * room the user made, it cannot set names, power levels or remove anyone, and says so in the log).
   * A ghost invited into a group's room is added to the group, if the inviter may add members.
   */
  private async onGhostInvitedToGroup(roomId: string, inviter: string, ghostMxid: string, remoteId: string, reject: (reason: string) => Promise<void>): Promise<void> {
    await this.network.ensureUser(inviter, null);
    await this.locks.run(`room|${roomId}`, async () => {
      const existing = this.store.portals.byRoom(roomId);
      if (existing?.kind === "group") {
        if (!this.store.portals.isMember(existing.id, inviter)) return;
        try {
          // The `added` event brings the ghost in.
          await this.network.addToGroup(inviter, existing.remoteChatId, { id: remoteId, matrix: false });
        } catch (err) {
          if (!(err instanceof NetworkError)) throw err;
          await reject(`${remoteId} could not be added to the group: ${err.message}.`);
        }
        return;
      }
      if (existing) return reject("This room is already a direct chat; start a new room for a group.");
      const profile = await this.network.getProfile(remoteId);
      if (!profile) return reject(`${remoteId} is not reachable through Third-Party Chats.`);
      await this.matrix.ensureGhost(remoteId, profile);
      await this.matrix.join(ghostMxid, roomId);
      const members = await this.matrix.memberships(ghostMxid, roomId);
      const remotes = [...members]
        .filter(([mxid, membership]) => (membership === "join" || membership === "invite") && this.matrix.remoteIdOfGhost(mxid) !== null)
        .map(([mxid]) => this.matrix.remoteIdOfGhost(mxid)!);
      if (remotes.length < 2) {
        await this.matrix.notice(
          ghostMxid,
          roomId,
          `To make this room a ${this.network.networkName} group, invite at least one more ${this.network.networkName} contact. For a chat with one person, start a direct chat instead.`,
          `invite.group-wait.${ghostMxid}`,
        );
        return;
      }
      const name = (await this.matrix.roomName(ghostMxid, roomId)) ?? "Group";
      // The bot first: once the room is recorded, the group's queue may show things in it.
      await this.matrix.invite(ghostMxid, roomId, this.matrix.botMxid);
      await this.matrix.join(this.matrix.botMxid, roomId);
      // Under GROUP_ROOMS: the network's `created` event, which may come before createGroup answers, finds this room.
      const adopted = await this.locks.run(GROUP_ROOMS, async () => {
        let created;
        try {
          created = await this.network.createGroup(inviter, name, remotes);
        } catch (err) {
          if (!(err instanceof NetworkError)) throw err;
          await this.matrix.notice(ghostMxid, roomId, `The ${this.network.networkName} group could not be created: ${err.message}.`, `invite.group-failed.${ghostMxid}`);
          return null;
        }
        const portal = this.store.portals.getOrCreateGroup(created.chat.id);
        this.store.portals.setRoom(portal.id, roomId);
        this.store.portals.addMember(portal.id, inviter);
        return { created, portal };
      });
      if (!adopted) return;
      const { created, portal } = adopted;
      log.info("adopted a user-created room as a group's portal", { portal: portal.id, roomId });
      const open = { ...portal, roomId };
      await this.applyGroupState(open, created.group);
      if (created.refused.length) await this.matrix.notice(this.matrix.botMxid, roomId, `Not added to the group: ${refusedText(created.refused)}.`, `group.refused.${roomId}`);
      await this.adoptEarlyMessages(roomId, open, ghostMxid);
    });
  }

  /** Bridges messages the user sent in a room before the ghost joined it (the homeserver did not push those to us). */
  private async adoptEarlyMessages(roomId: string, portal: PortalRow, ghostMxid: string): Promise<number> {
    const events = await this.matrix.recentEvents(ghostMxid, roomId, 50);
    let count = 0;
    for (const event of events) {
      if (event.type !== "m.room.message" || !this.isMember(portal, event.sender)) continue;
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
    if (portal?.kind === "group") return this.onMemberLeft(portal as OpenPortal, userId);
    if (!portal?.receiver || portal.receiver !== userId) return;
    const receiver = portal.receiver;
    const ghost = this.ghostOf(portal);
    await this.inbox.portalRemoved(portal).catch((err: Error) => log.warn("could not remove a portal from the user's space", { portal: portal.id, error: err.message }));
    // Messages already acknowledged to the network and not yet shown go to a fresh room, as
    // they would have had they come a moment later: moved in the transaction that closes the portal.
    const { reopened, waiting } = this.store.transaction(() => {
      const waiting = this.store.inbound.messagesOf(portal.id);
      const participants = this.store.portals.participants(portal.id);
      this.store.portals.delete(portal.id);
      if (waiting.length === 0) return { reopened: undefined, waiting: 0 };
      const fresh = this.store.portals.getOrCreate(portal.remoteChatId, receiver, "dm", participants);
      this.store.inbound.requeue(waiting, fresh.id);
      return { reopened: fresh, waiting: waiting.length };
    });
    log.info("portal closed because its user left", { portal: portal.id, roomId, waiting });
    await this.matrix.leave(ghost, roomId, "the chat was closed").catch(() => undefined);
    if (reopened) this.hooks.drainInbound(reopened.id);
  }

  /**
   * A Matrix member left a group's room: they leave the group on the network. The room stays
   * for the others; once no Matrix member is left the portal is closed (a later add opens a new one).
   */
  private async onMemberLeft(portal: OpenPortal, userId: string): Promise<void> {
    if (!this.store.portals.isMember(portal.id, userId)) return;
    await this.network.leaveGroup(userId, portal.remoteChatId);
    await this.unlistFromInbox(portal, userId);
    this.store.portals.removeMember(portal.id, userId);
    log.info("a Matrix user left a group's room and the group", { portal: portal.id });
    if (this.store.portals.members(portal.id).length > 0) return;
    await this.closeGroup(portal);
  }

  /** No Matrix member is left in a group: its portal is deleted, the ghosts and the bot leave its room. */
  private async closeGroup(portal: OpenPortal): Promise<void> {
    const roomId = portal.roomId;
    const ghosts = this.store.portals.participants(portal.id).map((p) => this.matrix.ghostMxid(p));
    this.store.portals.delete(portal.id);
    log.info("group portal closed: no Matrix member is left", { portal: portal.id, roomId });
    for (const ghost of ghosts) await this.matrix.leave(ghost, roomId, "the chat was closed").catch(() => undefined);
    await this.matrix.leave(this.matrix.botMxid, roomId, "the chat was closed").catch(() => undefined);
  }

  /**
   * `forget`: the user is erased from the groups they are in (their network identity, and so their
   * group memberships, are gone already): out of each group's room, their messages and queued
   * sends deleted; a group with no Matrix member left is closed. Returns what was erased.
   */
  async forgetGroups(mxid: string): Promise<{ groups: number; messages: number; queued: number }> {
    const portals = this.store.portals.groupsOf(mxid).filter((p): p is OpenPortal => p.roomId !== null);
    const erased = this.store.portals.forgetMember(mxid);
    for (const portal of portals) {
      await this.matrix
        .kick(this.matrix.botMxid, portal.roomId, mxid, "the user asked the bridge to forget them")
        .catch((err: Error) => log.debug("could not remove a forgotten user from a group's room", { error: err.message }));
    }
    for (const portal of erased.orphaned) if (portal.roomId) await this.closeGroup(portal as OpenPortal);
    return { groups: erased.groups, messages: erased.messages, queued: erased.queued };
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

  /**
   * `group <name> <phone> <phone>…`: creates a WhatsApp group with the user as its admin and these
   * members, and its room (the user is invited). Members the network would not add are named.
   */
  async startGroup(userId: string, name: string, inputs: string[]): Promise<{ roomId: string; refused: { id: string; reason: string }[] }> {
    if (!name.trim()) throw new BridgeUserError("a group needs a name");
    const members: string[] = [];
    for (const input of inputs) {
      const checked = this.network.validateIdentifier(input);
      if (!checked.ok) throw new BridgeUserError(checked.reason);
      if (!members.includes(checked.identifier)) members.push(checked.identifier);
    }
    if (members.length < 2) throw new BridgeUserError("a group needs at least two other members; for one, say `start <phone>`");
    const user = this.access.admitUser(userId);
    if (!user.thirdPartyEnabled) throw new BridgeUserError("your Third-Party Chats are off; say `enable` first", "conflict");
    await this.network.ensureUser(userId, null);
    const created = await this.network.createGroup(userId, name.trim(), members).catch((err: Error) => {
      throw new BridgeUserError(err.message, "unavailable");
    });
    if (!created.group.members.some((m) => !m.matrix)) throw new BridgeUserError(`none of them could be added: ${refusedText(created.refused)}`, "conflict");
    const portal = await this.ensurePortal(userId, created.chat, created.group);
    return { roomId: portal.roomId, refused: created.refused };
  }

  /** The user's chats, for `list` and `GET /chats`: their 1:1 chats, then the groups they are in. */
  listChats(userId: string): ChatListing[] {
    const dms: ChatListing[] = this.store.portals
      .forReceiver(userId)
      .filter((p) => p.roomId)
      .map((p) => {
        const remoteUserId = voiceOf(this.chatOf(p));
        return { kind: "dm", roomId: p.roomId!, remoteUserId, name: this.store.ghosts.get(remoteUserId)?.displayName ?? remoteUserId };
      });
    const groups: ChatListing[] = this.store.portals
      .groupsOf(userId)
      .filter((p) => p.roomId)
      .map((p) => ({ kind: "group", roomId: p.roomId!, remoteChatId: p.remoteChatId, name: p.name ?? "Group", members: this.store.portals.participants(p.id).length }));
    return [...dms, ...groups];
  }
}
