/**
 * Shared fakes of the core's two ports, for unit tests of BridgeCore without a homeserver or a
 * network. Every required method exists and fails loudly ("the fake … has no X") unless a test
 * supplies it, so a test states exactly what its scenario needs and the compiler checks it
 * against the real interfaces (no casts). What a chat supports comes from `getCapabilities`, as
 * in the real connector: the plain-text default says no edits, reactions, receipts or typing.
 */
import type { MatrixPort, SendOptions } from "../../src/bridge/matrix-port";
import type { ChatCapabilities, NetworkConnector } from "../../src/network/connector";

function missing(port: string, name: string): never {
  throw new Error(`the fake ${port} has no ${name}: give it in the test's overrides`);
}

/** A MatrixPort on the server "hs" with the bot @bot:hs; anything else comes from `overrides`. */
export function fakeMatrixPort(overrides: Partial<MatrixPort> = {}): MatrixPort {
  const m = (name: string) => missing("MatrixPort", name);
  const base: MatrixPort = {
    botMxid: "@bot:hs",
    serverName: "hs",
    ghostMxid: () => m("ghostMxid"),
    remoteIdOfGhost: () => m("remoteIdOfGhost"),
    ensureGhost: async () => m("ensureGhost"),
    createDm: async () => m("createDm"),
    createGroupRoom: async () => m("createGroupRoom"),
    memberships: async () => m("memberships"),
    roomName: async () => m("roomName"),
    invite: async () => m("invite"),
    join: async () => m("join"),
    leave: async () => m("leave"),
    send: async () => m("send"),
    redact: async () => m("redact"),
    setTyping: async () => m("setTyping"),
    sendReadReceipt: async () => m("sendReadReceipt"),
    notice: async () => m("notice"),
    members: async () => m("members"),
    joinedRooms: async () => m("joinedRooms"),
    recentEvents: async () => m("recentEvents"),
    roomLink: (roomId) => `https://matrix.to/#/${roomId}`,
    createSpace: async () => m("createSpace"),
    setState: async () => m("setState"),
    kick: async () => m("kick"),
    setRoomAvatar: async () => m("setRoomAvatar"),
    botNotice: async () => m("botNotice"),
    downloadMedia: async () => m("downloadMedia"),
    mediaMessage: async () => m("mediaMessage"),
  };
  return { ...base, ...overrides };
}

/** What the fake network's chats support: text and files up to 1 MiB, nothing else; `extra` adds to it. */
export function plainCapabilities(extra: Partial<ChatCapabilities> = {}): ChatCapabilities {
  return {
    text: { maxLength: 65536 },
    media: { file: { mimetypes: ["*/*"], maxSize: 1 << 20 } },
    replies: false,
    readReceipts: false,
    typing: false,
    deliveryReceipts: false,
    ...extra,
  };
}

/** A NetworkConnector with plain-text capabilities; anything else comes from `overrides`. */
export function fakeNetwork(overrides: Partial<NetworkConnector> = {}): NetworkConnector {
  const m = (name: string) => missing("NetworkConnector", name);
  const base: NetworkConnector = {
    networkName: "WhatsApp",
    getCapabilities: () => plainCapabilities(),
    validateIdentifier: () => m("validateIdentifier"),
    start: async () => m("start"),
    stop: async () => m("stop"),
    connectionState: () => m("connectionState"),
    ensureUser: async () => m("ensureUser"),
    setThirdPartyChats: async () => m("setThirdPartyChats"),
    removeUser: async () => m("removeUser"),
    resolveIdentifier: async () => m("resolveIdentifier"),
    getProfile: async () => m("getProfile"),
    dmChat: () => m("dmChat"),
    getGroup: async () => m("getGroup"),
    createGroup: async () => m("createGroup"),
    addToGroup: async () => m("addToGroup"),
    removeFromGroup: async () => m("removeFromGroup"),
    fetchGroupPicture: async () => m("fetchGroupPicture"),
    updateGroup: async () => m("updateGroup"),
    leaveGroup: async () => m("leaveGroup"),
    sendMessage: async () => m("sendMessage"),
    sendChange: async () => m("sendChange"),
    sendReadReceipt: async () => m("sendReadReceipt"),
    sendTyping: () => m("sendTyping"),
    downloadMedia: async () => m("downloadMedia"),
  };
  return { ...base, ...overrides };
}

export interface SentEvent {
  as: string;
  roomId: string;
  content: Record<string, unknown>;
  opts: SendOptions;
}

/**
 * A homeserver that records what the core sends: ghosts are @wa_<digits>:hs, rooms !roomN:hs.
 * `gate(roomId)` holds a room's sends until released; `failNext` refuses the next few sends.
 */
export class FakeHomeserver {
  readonly sent: SentEvent[] = [];
  readonly botNotices: string[] = [];
  failNext = 0;
  attempts = 0;
  private rooms = 0;
  private readonly gates = new Map<string, { promise: Promise<void>; release: () => void }>();

  gate(roomId: string): () => void {
    let release!: () => void;
    const promise = new Promise<void>((r) => (release = r));
    this.gates.set(roomId, { promise, release });
    return () => {
      this.gates.delete(roomId);
      release();
    };
  }

  port(overrides: Partial<MatrixPort> = {}): MatrixPort {
    const ghost = (id: string) => `@wa_${id.replace("+", "")}:hs`;
    return fakeMatrixPort({
      ghostMxid: ghost,
      remoteIdOfGhost: () => null,
      ensureGhost: async (id) => ghost(id),
      createDm: async () => `!room${++this.rooms}:hs`,
      joinedRooms: async () => [],
      members: async () => [],
      send: async (as, roomId, content, opts) => {
        this.attempts += 1;
        await this.gates.get(roomId)?.promise;
        if (this.failNext > 0) {
          this.failNext -= 1;
          throw new Error("M_UNKNOWN: the homeserver had a bad moment");
        }
        this.sent.push({ as, roomId, content, opts });
        return `$ev${this.sent.length}`;
      },
      redact: async () => undefined,
      leave: async () => undefined,
      botNotice: async (_roomId, markdown) => {
        this.botNotices.push(markdown);
      },
      ...overrides,
    });
  }

  bodies(roomId?: string): string[] {
    return this.sent.filter((s) => !roomId || s.roomId === roomId).map((s) => String(s.content.body));
  }
}
