/**
 * The Matrix ends of a chaos run: plain HTTP clients, or (with encrypted portals) real end-to-end
 * encrypting clients, matrix-nio with libolm (test/support/nio-peer.py), in rooms Synapse encrypts.
 */
import { registerUser, type TestClient } from "../support/matrix-client";
import { NioPeer } from "../support/nio";
import { PROVIDER_DOMAIN, type Stack, type StackOptions } from "../support/stack";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const pad = (n: number, width: number) => String(n).padStart(width, "0");
export const uriOf = (mxid: string) => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;

/** Runs n tasks at most `width` at a time. */
export async function inBatches<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await fn(item);
    }),
  );
}

/** One chat as the chaos run drives it: the Matrix end sends and reads, the WhatsApp end is the simulator. */
export interface Chat {
  index: number;
  phone: string;
  /** The Matrix user of the chat. */
  userId: string;
  roomId: string;
  /** Sends an m.text as the Matrix user (a repeat with the same transaction id is the same event). */
  send(body: string, txnId: string): Promise<unknown>;
  /** What the Matrix user's client has of the room, in room order. */
  arrivals(): Promise<MatrixArrivals>;
}

export interface MatrixArrivals {
  /** Bodies of the ghost's messages. */
  ghostBodies: string[];
  undecryptable: number;
  decryptedLate: number;
  gappySyncs: number;
}

/** The Matrix ends of a run: its chats and how to stop them. */
export interface MatrixEnds {
  chats: Chat[];
  users: number;
  stop(): Promise<void>;
}

/** The notice the bridge posts for a Matrix event it could not decrypt (src/bridge/failure.ts). */
export const UNDECRYPTABLE_NOTICE = /^Your message was not sent: the bridge could not decrypt it/;

/** Plain Matrix users (HTTP clients without encryption), five chats each. */
export async function plainEnds(stack: Stack, chatCount: number, chatsPerUser: number): Promise<MatrixEnds> {
  const userCount = Math.ceil(chatCount / chatsPerUser);
  const clients: TestClient[] = [];
  for (let u = 0; u < userCount; u++) clients.push(await stack.user(`chaos${pad(u, 2)}`));
  await inBatches(clients, 4, async (client) => {
    // Third-Party Chats are off by default: every chaos user turns them on.
    await stack.botRoom(client, { enable: true });
  });
  const chats: Chat[] = [];
  await inBatches(
    Array.from({ length: chatCount }, (_, i) => i),
    6,
    async (index) => {
      const phone = chaosPhone(index);
      const client = clients[Math.floor(index / chatsPerUser)];
      await stack.sim.createUser(phone, `Chaos ${index}`);
      await stack.sim.sendText(phone, uriOf(client.userId), chaosOpenText(index));
      const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone), { timeoutMs: 120_000 });
      await client.joinRoom(invite.roomId);
      const ghost = stack.ghostId(phone);
      chats.push({
        index,
        phone,
        userId: client.userId,
        roomId: invite.roomId,
        send: (body, txnId) => client.sendEvent(invite.roomId, "m.room.message", { msgtype: "m.text", body }, txnId),
        arrivals: async () => ({
          ghostBodies: (await client.history(invite.roomId, { types: ["m.room.message"] })).filter((e) => e.sender === ghost).map((e) => String(e.content.body)),
          undecryptable: 0,
          decryptedLate: 0,
          gappySyncs: 0,
        }),
      });
    },
  );
  chats.sort((a, b) => a.index - b.index);
  // From here on, histories are read with /messages; idle sync loops would only cost CPU.
  for (const client of clients) await client.stopSync();
  return { chats, users: userCount, stop: async () => undefined };
}

export const chaosPhone = (index: number): string => `+49170${pad(index, 7)}`;
export const chaosOpenText = (index: number): string => `chaos open c${pad(index, 3)}`;

/** What a stack for encrypted portals needs: Synapse encrypts every new room, the bridge has encryption on (new portals start encrypted). */
export function encryptedStackOptions(): Pick<StackOptions, "encryptByDefault" | "bridgeConfig"> {
  return {
    encryptByDefault: "all",
    bridgeConfig: (c) => {
      c.encryption = { allow: true, default: true };
    },
  };
}

interface NioTimeline {
  events: { sender: string; text?: string; undecryptable?: boolean }[];
  late: number;
  limited: number;
}

/**
 * Matrix users with a real end-to-end encrypting client each (matrix-nio with libolm, one Python
 * process per user, syncing all along): the user opens an encrypted DM with the bot and turns
 * Third-Party Chats on; each WhatsApp user writes first, and the user joins the encrypted portal
 * its ghost opens. Sends go through nio (encrypted, with the chaos run's transaction ids); what
 * arrived is what nio decrypted, in sync order.
 */
export async function encryptedEnds(stack: Stack, chatCount: number, chatsPerUser: number): Promise<MatrixEnds> {
  const userCount = Math.ceil(chatCount / chatsPerUser);
  const peers: NioPeer[] = [];
  const users: TestClient[] = [];
  const stop = async () => {
    for (const peer of peers) peer.stop();
  };
  try {
    for (let u = 0; u < userCount; u++) {
      const user = await registerUser(stack.hs, `chaos${pad(u, 2)}_${stack.name.replace(/[^a-z0-9]/g, "")}`.toLowerCase());
      users.push(user);
      // A timeline limit above what a chaos room receives between two syncs: no gaps to miss events in.
      peers.push(NioPeer.start(stack.hs, user, stack.dir, { timelineLimit: 1000 }));
    }
    const chats: Chat[] = [];
    await inBatches(
      users.map((user, u) => ({ user, peer: peers[u], u })),
      4,
      async ({ user, peer, u }) => {
        const bot = await peer.ask<{ room_id: string; encrypted: boolean }>({ cmd: "create_room", invite: stack.botId });
        if (!bot.encrypted) throw new Error("the bot's DM is not encrypted: does the homeserver encrypt by default?");
        await peer.ask({ cmd: "wait_body", room: bot.room_id, sender: stack.botId, pattern: "start <phone>" });
        await peer.ask({ cmd: "send", room: bot.room_id, text: "enable" });
        await peer.ask({ cmd: "wait_body", room: bot.room_id, sender: stack.botId, pattern: "Third-Party Chats (are \\*\\*on\\*\\*|were already on)" });
        // One chat at a time per user: the peer answers one command at a time.
        for (let index = u * chatsPerUser; index < Math.min(chatCount, (u + 1) * chatsPerUser); index++) {
          const phone = chaosPhone(index);
          const ghost = stack.ghostId(phone);
          await stack.sim.createUser(phone, `Chaos ${index}`);
          await stack.sim.sendText(phone, uriOf(user.userId), chaosOpenText(index));
          const roomId = (await peer.ask<{ room_id: string }>({ cmd: "wait_invite", inviter: ghost }, 120_000)).room_id;
          const joined = await peer.ask<{ encrypted: boolean }>({ cmd: "join", room: roomId });
          if (!joined.encrypted) throw new Error(`the portal of chat ${index} is not encrypted`);
          chats.push({
            index,
            phone,
            userId: user.userId,
            roomId,
            send: (body, txnId) => peer.ask({ cmd: "send_txn", room: roomId, text: body, txn: txnId }),
            arrivals: async () => {
              const timeline = await peer.ask<NioTimeline>({ cmd: "timeline", room: roomId });
              return {
                ghostBodies: timeline.events.filter((e) => e.sender === ghost && typeof e.text === "string").map((e) => e.text!),
                undecryptable: timeline.events.filter((e) => e.undecryptable).length,
                decryptedLate: timeline.late,
                gappySyncs: timeline.limited,
              };
            },
          });
        }
      },
    );
    chats.sort((a, b) => a.index - b.index);
    return { chats, users: userCount, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
