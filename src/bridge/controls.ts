import { getLogger } from "../logging";
import { ConnectionState } from "../network/connector";
import { PROTOCOL_VERSION } from "../protocol/frames";
import { InboxMode, RefusedContact } from "../store";
import { BRIDGE_VERSION } from "../version";
import { BridgeCore } from "./core";
import { BridgeUserError } from "./failure";
import { InboxChange } from "./inbox";
import { MatrixPort } from "./matrix-port";
import { PermissionLevel } from "./permissions";

const log = getLogger("controls");

export interface StatusReport {
  user: string;
  permission: PermissionLevel;
  thirdPartyChats: boolean;
  inbox: InboxMode;
  spaceRoomId: string | null;
  connection: ConnectionState;
  chats: number;
  /** The user's messages waiting for the network. */
  queued: number;
  /** WhatsApp users refused while the chats were off (since they were last turned on). */
  refusedContacts: RefusedContact[];
  /** Admins only: the whole bridge. */
  bridge?: { users: number; portals: number; queued: number };
}

export interface ForgetReport {
  portals: number;
  messages: number;
  queued: number;
  refusedContacts: number;
  spaceRemoved: boolean;
}

export interface SettingChange {
  thirdPartyChats: boolean;
  changed: boolean;
  /** On enable: who tried to write while the chats were off (they must write again). */
  refusedWhileOff: RefusedContact[];
}

/**
 * What a user can do with the bridge, whichever way they ask (bot command or provisioning
 * API): the same checks, the same effects. Refusals are BridgeUserError with a reason for people.
 */
export class UserControls {
  constructor(
    private readonly core: BridgeCore,
    private readonly matrix: MatrixPort,
  ) {}

  /** The network's name as users know it ("WhatsApp"). */
  get networkName(): string {
    return this.core.network.networkName;
  }

  /** Whether a user-typed identifier (a phone number) is one the network understands (checked by its connector). */
  isIdentifier(input: string): boolean {
    return this.core.network.validateIdentifier(input).ok;
  }

  levelOf(mxid: string): PermissionLevel {
    return this.core.permissions.levelOf(mxid);
  }

  /** Whether the bridge has a record of the user (they talked to it before). */
  knows(mxid: string): boolean {
    return this.core.store.users.get(mxid) !== undefined;
  }

  /**
   * Turns Third-Party Chats on or off, on the network first-hand: while off, the network refuses
   * WhatsApp users' messages (they are told why) and nothing the user writes is sent.
   */
  async setThirdPartyChats(mxid: string, on: boolean): Promise<SettingChange> {
    const before = this.core.admitUser(mxid);
    const store = this.core.store;
    // Stored first, so that turning off stops outgoing messages at once.
    store.users.setThirdPartyEnabled(mxid, on);
    try {
      await this.core.network.setThirdPartyChats(mxid, on);
    } catch (err) {
      store.users.setThirdPartyEnabled(mxid, before.thirdPartyEnabled);
      log.warn("could not change the Third-Party Chats setting on the network", { user: mxid, error: (err as Error).message });
      throw new BridgeUserError("the network could not be reached to change the setting, so nothing changed; please try again in a moment", "unavailable");
    }
    store.users.markExplained(mxid);
    const refusedWhileOff = on ? store.users.refusedContacts(mxid) : [];
    if (on) store.users.clearRefused(mxid);
    if (before.thirdPartyEnabled !== on) log.info(`Third-Party Chats turned ${on ? "on" : "off"}`, { user: mxid });
    return { thirdPartyChats: on, changed: before.thirdPartyEnabled !== on, refusedWhileOff };
  }

  async setInbox(mxid: string, mode: InboxMode): Promise<InboxChange> {
    this.core.admitUser(mxid);
    return this.core.inbox.setMode(mxid, mode);
  }

  status(mxid: string): StatusReport {
    const store = this.core.store;
    const user = store.users.get(mxid);
    if (!user) throw new BridgeUserError("the bridge has no record of you yet", "not_found");
    const permission = this.levelOf(mxid);
    const report: StatusReport = {
      user: mxid,
      permission,
      thirdPartyChats: user.thirdPartyEnabled,
      inbox: user.inboxMode,
      spaceRoomId: user.spaceRoomId,
      connection: this.core.connectionState(),
      chats: this.core.listChats(mxid).length,
      queued: store.outbound.depthForUser(mxid),
      refusedContacts: store.users.refusedContacts(mxid),
    };
    if (permission === "admin") report.bridge = { users: store.users.all().length, portals: store.portals.count(), queued: store.outbound.depth() };
    return report;
  }

  startChat(mxid: string, phone: string): ReturnType<BridgeCore["startChat"]> {
    return this.core.startChat(mxid, phone);
  }

  startGroup(mxid: string, name: string, members: string[]): ReturnType<BridgeCore["startGroup"]> {
    return this.core.startGroup(mxid, name, members);
  }

  listChats(mxid: string): ReturnType<BridgeCore["listChats"]> {
    if (this.levelOf(mxid) === "none") throw new BridgeUserError("you are not allowed to use this bridge", "forbidden");
    return this.core.listChats(mxid);
  }

  /** What `forget` would delete, for the confirmation question. */
  forgetPreview(mxid: string): { chats: number; queued: number } {
    if (!this.knows(mxid)) throw new BridgeUserError("the bridge has no data about you", "not_found");
    return { chats: this.core.listChats(mxid).length, queued: this.core.store.outbound.depthForUser(mxid) };
  }

  /**
   * Deletes everything the bridge keeps about the user, as data protection law expects: the
   * network identity with its keys and sessions (on the gateway too), the Space, every portal
   * (the ghosts leave the rooms) with its message map and queue, the ids kept of Matrix sends and
   * events in the user's rooms, and the user's settings. The
   * network goes first: if it cannot be reached, nothing is deleted and the user can retry.
   */
  async forget(mxid: string): Promise<ForgetReport> {
    const store = this.core.store;
    const user = store.users.get(mxid);
    if (!user) throw new BridgeUserError("the bridge has no data about you", "not_found");
    try {
      await this.core.network.removeUser(mxid);
    } catch (err) {
      log.warn("could not remove a user from the network", { user: mxid, error: (err as Error).message });
      throw new BridgeUserError("the network could not be reached to delete your identity there, so nothing was deleted; please try again in a moment", "unavailable");
    }
    let spaceRemoved = false;
    if (user.spaceRoomId) {
      await this.core.inbox.setMode(mxid, "unified").catch((err: Error) => log.warn("could not remove a forgotten user's space", { error: err.message }));
      spaceRemoved = true;
    }
    for (const portal of store.portals.forReceiver(mxid)) {
      if (!portal.roomId) continue;
      const ghost = this.core.portalGhost(portal);
      await this.matrix.notice(ghost, portal.roomId, "This chat is closed: you asked the bridge to forget your data. Nothing more is bridged here.").catch(() => undefined);
      await this.matrix.leave(ghost, portal.roomId, "the user asked the bridge to forget them").catch(() => undefined);
    }
    // Groups: out of their rooms (the network identity, with its memberships, is gone), their messages and sends erased.
    const groups = await this.core.portals.forgetGroups(mxid);
    // The ids the bridge kept of its sends and of the events it received in the user's rooms go too (a group's room stays for its other members).
    const rooms = [...store.portals.forReceiver(mxid).map((p) => p.roomId), user.managementRoomId, user.spaceRoomId].filter((r): r is string => r !== null);
    const erased = store.transaction(() => {
      store.matrixSends.forgetRooms(rooms);
      store.journal.forgetRooms(rooms);
      return store.users.erase(mxid);
    });
    log.info("forgot a user", { user: mxid, portals: erased.portals, groups: groups.groups });
    return {
      ...erased,
      portals: erased.portals + groups.groups,
      messages: erased.messages + groups.messages,
      queued: erased.queued + groups.queued,
      spaceRemoved,
    };
  }

  version(): { bridge: string; protocol: number; node: string } {
    return { bridge: BRIDGE_VERSION, protocol: PROTOCOL_VERSION, node: process.versions.node };
  }
}
