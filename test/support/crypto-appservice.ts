/**
 * A minimal encrypted appservice for test/e2e/encryption.test.ts: one ghost with its own device
 * (EncryptionManager), no bridge around it. It joins rooms it is invited to, decrypts what others
 * send there, and sends encrypted text on request. Started as a child so the test can SIGKILL it.
 *
 *   node crypto-appservice.js CONFIG_JSON   {hs, asToken, hsToken, port, storeFile, storeKey, ghost}
 *
 * Control API on the same port (the test's only view of plaintexts, never logged):
 *   POST /control/send {room, text} -> {event_id}
 *   GET  /control/received?text=T   -> {messages: [{room, sender, text}], failures: [code]} once T
 *                                      was decrypted or a decryption failed (408 after a minute)
 *   GET  /control/cross-signed      -> {crossSigned: bool}
 *   POST /control/forget {user}     -> forgetUser, then {deviceInStore, databasesInStore}
 *   GET  /control/check[?drop=1]    -> the start-up check's answer; drop=1 strips the encryption
 *                                      extensions from transactions meanwhile (a homeserver without them)
 * Prints "READY <deviceId>" on stdout once the ghost's device is up.
 */
import http from "node:http";
import { randomBytes } from "node:crypto";
import { DecryptionFailure, EncryptionManager } from "../../src/crypto/encryption-manager";
import { DeviceClient } from "../../src/crypto/device-client";
import { checkHomeserverEncryption } from "../../src/crypto/homeserver-check";
import { MachineStore } from "../../src/crypto/store/machine-store";
import { KeyedQueue } from "../../src/util/keyed-queue";

interface Config {
  hs: string;
  asToken: string;
  hsToken: string;
  port: number;
  storeFile: string;
  storeKey: string;
  ghost: string;
  bot: string;
}

const EXTENSION_KEYS = [
  "to_device",
  "de.sorunome.msc2409.to_device",
  "device_lists",
  "org.matrix.msc3202.device_lists",
  "org.matrix.msc3202.device_one_time_keys_count",
  "org.matrix.msc3202.device_one_time_key_counts",
  "org.matrix.msc3202.device_unused_fallback_key_types",
];

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2]) as Config;
  const store = await MachineStore.open(config.storeFile, config.storeKey);
  const manager = new EncryptionManager({ homeserverUrl: config.hs, asToken: config.asToken, store, deviceDisplayName: "Bridge test ghost" });
  const client = new DeviceClient({ homeserverUrl: config.hs, asToken: config.asToken });
  const received: { room: string; sender: string; text: unknown }[] = [];
  const failures: string[] = [];
  const transactions = new KeyedQueue();
  const changed = new Set<() => void>();
  const notify = (): void => {
    for (const wake of changed) wake();
  };

  let dropExtensions = false;
  for (const user of [config.ghost, config.bot]) {
    try {
      await client.request("POST", "v3/register", { userId: user }, { type: "m.login.application_service", username: user.slice(1).split(":")[0], inhibit_login: true });
    } catch (err) {
      if (!/M_USER_IN_USE/.test((err as Error).message)) throw err;
    }
  }

  async function onTransaction(body: Record<string, unknown>): Promise<void> {
    if (dropExtensions) for (const key of EXTENSION_KEYS) delete body[key];
    await manager.handleTransaction(body, (u) => u === config.ghost || u === config.bot);
    for (const event of (body.events as Record<string, unknown>[] | undefined) ?? []) {
      const roomId = event.room_id as string;
      if (event.type === "m.room.member") {
        manager.roomChanged(roomId);
        const content = event.content as { membership?: string };
        if (event.state_key === config.ghost && content.membership === "invite") {
          await client.request("POST", `v3/join/${encodeURIComponent(roomId)}`, { userId: config.ghost }, {});
        }
      } else if (event.type === "m.room.encrypted" && event.sender !== config.ghost) {
        // Not awaited: a room key may come in a later transaction, which must not wait behind this one.
        manager.decrypt(roomId, event, config.ghost).then(
          (clear) => {
            received.push({ room: roomId, sender: event.sender as string, text: clear.content.body });
            notify();
          },
          (err) => {
            failures.push(err instanceof DecryptionFailure ? err.code : (err as Error).message);
            notify();
          },
        );
      }
    }
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const reply = (status: number, obj: unknown): void => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(obj));
      };
      const url = new URL(req.url ?? "/", "http://localhost");
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>) : {};
      if (url.pathname.startsWith("/_matrix/app/")) {
        if (req.headers.authorization !== `Bearer ${config.hsToken}`) return reply(403, { errcode: "M_FORBIDDEN" });
        if (req.method === "PUT" && url.pathname.includes("/transactions/")) {
          transactions
            .run("txn", () => onTransaction(body))
            .then(
              () => reply(200, {}),
              (err) => reply(500, { error: (err as Error).message }),
            );
          return;
        }
        return reply(200, {});
      }
      if (url.pathname === "/control/send") {
        const room = body.room as string;
        manager
          .encrypt(room, config.ghost, "m.room.message", { msgtype: "m.text", body: body.text })
          .then((content) =>
            client.request<{ event_id: string }>(
              "PUT",
              `v3/rooms/${encodeURIComponent(room)}/send/m.room.encrypted/${randomBytes(8).toString("hex")}`,
              { userId: config.ghost },
              content,
            ),
          )
          .then(
            (r) => reply(200, r),
            (err) => reply(500, { error: (err as Error).message }),
          );
        return;
      }
      if (url.pathname === "/control/received") {
        const text = url.searchParams.get("text");
        const done = (): boolean => failures.length > 0 || received.some((m) => m.text === text);
        if (done()) return reply(200, { messages: received, failures });
        const timer = setTimeout(() => {
          changed.delete(wake);
          reply(408, { error: `no message ${JSON.stringify(text)} within a minute` });
        }, 60_000);
        const wake = (): void => {
          if (!done()) return;
          clearTimeout(timer);
          changed.delete(wake);
          reply(200, { messages: received, failures });
        };
        changed.add(wake);
        return;
      }
      if (url.pathname === "/control/forget") {
        const user = body.user as string;
        manager
          .forgetUser(user)
          .then(() => reply(200, { deviceInStore: store.deviceOf(user) ?? null, databasesInStore: store.file.databaseNames().filter((n) => n.includes(user)).length }))
          .catch((err) => reply(500, { error: (err as Error).message }));
        return;
      }
      if (url.pathname === "/control/check") {
        dropExtensions = url.searchParams.get("drop") === "1";
        checkHomeserverEncryption(manager, { homeserverUrl: config.hs, asToken: config.asToken, botUserId: config.bot, timeoutMs: 10_000 })
          .finally(() => (dropExtensions = false))
          .then(
            (r) => reply(200, r),
            (err) => reply(500, { error: (err as Error).message }),
          );
        return;
      }
      if (url.pathname === "/control/cross-signed") {
        manager.ownDeviceIsCrossSigned(config.ghost).then(
          (ok) => reply(200, { crossSigned: ok }),
          (err) => reply(500, { error: (err as Error).message }),
        );
        return;
      }
      reply(404, {});
    });
  });
  await new Promise<void>((resolve) => server.listen(config.port, "127.0.0.1", resolve));
  const deviceId = await manager.deviceIdOf(config.ghost);
  process.stdout.write(`READY ${deviceId}\n`);
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
