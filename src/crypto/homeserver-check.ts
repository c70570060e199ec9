/**
 * The start-up check: does the homeserver deliver what end-to-bridge encryption needs? It acts,
 * rather than reading versions: it creates the bot's device (MSC4190), uploads its keys as that
 * device (MSC3202 masquerading), and sends the device a to-device probe that must come back in a
 * transaction (MSC2409) together with its one-time-key count (MSC3202 transaction extensions).
 * The appservice must already feed its transactions to the manager (handleTransaction).
 */
import { randomBytes } from "node:crypto";
import { DeviceClient } from "./device-client";
import { EncryptionManager } from "./encryption-manager";

export interface EncryptionSupport {
  ok: boolean;
  /** What is missing, each worded with the setting that provides it. */
  missing: string[];
  /** One line for the admin ("" when ok). */
  summary: string;
}

const PROBE_TYPE = "org.matrix_interop_bridge.probe";

export const MISSING = {
  devices: "device creation for appservice users (registration: io.element.msc4190: true)",
  masquerading: "acting as an appservice user's device (registration: org.matrix.msc3202: true)",
  toDevice: "to-device events in transactions (Synapse: experimental_features.msc2409_to_device_messages_enabled, registration: push_ephemeral)",
  keyCounts: "one-time-key counts in transactions (Synapse: experimental_features.msc3202_transaction_extensions, registration: org.matrix.msc3202: true)",
} as const;

export async function checkHomeserverEncryption(
  manager: EncryptionManager,
  opts: {
    homeserverUrl: string;
    asToken: string;
    botUserId: string;
    /** How long the probe may take (default 15 s). */
    timeoutMs?: number;
    /**
     * Start the probe's time only once this resolves (a restarted bridge: the homeserver, backing
     * off after failed transactions, delivers nothing for a while, then its backlog before the probe).
     */
    armTimeout?: Promise<void>;
  },
): Promise<EncryptionSupport> {
  const missing: string[] = [];
  const client = new DeviceClient({ homeserverUrl: opts.homeserverUrl, asToken: opts.asToken, attempts: 2 });
  let deviceId: string;
  try {
    deviceId = await manager.deviceIdOf(opts.botUserId);
  } catch (err) {
    const text = (err as Error).message;
    // Without MSC4190 the device PUT is refused; without MSC3202 the key upload as the device is.
    missing.push(/devices/.test(text) ? MISSING.devices : MISSING.masquerading);
    return result(missing);
  }
  const whoami = await client.request<{ device_id?: string }>("GET", "v3/account/whoami", { userId: opts.botUserId, deviceId }).catch(() => ({}) as { device_id?: string });
  if (whoami.device_id !== deviceId) missing.push(MISSING.masquerading);

  // Counts seen before the check prove nothing about now.
  manager.seen.oneTimeKeyCounts = false;
  const nonce = randomBytes(12).toString("hex");
  const arrived = new Promise<boolean>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const arm = () => {
      if (done) return;
      timer = setTimeout(() => {
        done = true;
        stop();
        resolve(false);
      }, opts.timeoutMs ?? 15_000);
    };
    const stop = manager.onToDevice((userId, device, event) => {
      if (userId !== opts.botUserId || device !== deviceId || event.type !== PROBE_TYPE) return;
      if ((event.content as { nonce?: string } | undefined)?.nonce !== nonce) return;
      done = true;
      clearTimeout(timer);
      stop();
      resolve(true);
    });
    if (opts.armTimeout) void opts.armTimeout.then(arm);
    else arm();
  });
  await client.request("PUT", `v3/sendToDevice/${PROBE_TYPE}/${nonce}`, { userId: opts.botUserId, deviceId }, { messages: { [opts.botUserId]: { [deviceId]: { nonce } } } });
  if (!(await arrived)) missing.push(MISSING.toDevice);
  // The probe's transaction carries the recipient's key counts when MSC3202 is on.
  if (!manager.seen.oneTimeKeyCounts) missing.push(MISSING.keyCounts);
  return result(missing);
}

function result(missing: string[]): EncryptionSupport {
  if (!missing.length) return { ok: true, missing, summary: "" };
  return { ok: false, missing, summary: `encryption: the homeserver does not provide ${missing.join("; ")}` };
}
