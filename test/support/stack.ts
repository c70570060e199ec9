import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import YAML from "yaml";
import type { BridgeConfig } from "../../src/config";
import { freePort, repoRoot, startTestHomeserver, TestHomeserver } from "./homeserver";
import { registerUser, TestClient } from "./matrix-client";
import { ManagedProcess } from "./processes";
import { SimApi } from "./sim-api";

type DeepPartial<T> = { [K in keyof T]?: T[K] extends unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K] };

/**
 * The config file a stack writes for its bridge: the YAML that src/config.ts validates into a
 * BridgeConfig, with the defaults left out. What every stack sets is required here, so a test
 * can change a part of it (`c.network.media.max_size = …`) without casts.
 */
export type StackBridgeConfig = DeepPartial<BridgeConfig> & {
  homeserver: BridgeConfig["homeserver"];
  appservice: Pick<BridgeConfig["appservice"], "hostname" | "port">;
  database: BridgeConfig["database"];
  network: DeepPartial<BridgeConfig["network"]> & { media: DeepPartial<BridgeConfig["network"]["media"]> };
  logging: BridgeConfig["logging"];
};

export interface StackOptions {
  /** Changes the bridge's config before it is written (the stack's defaults are in Stack.start). */
  bridgeConfig?: (c: StackBridgeConfig) => void;
  /** Fixed ports (the demo uses well-known ones); free ports are chosen otherwise. */
  ports?: Partial<Record<"homeserver" | "appservice" | "media" | "gateway" | "sim" | "metrics", number>>;
  /** Where config, databases and logs go; a fresh temporary folder by default. */
  dir?: string;
  logLevel?: "error" | "warn" | "info" | "debug";
  /** Extra command-line flags for the simulator (e.g. --send-timeout-ms). */
  simArgs?: string[];
  /** LOG_LEVEL of the gateway and simulator processes (default: inherited). */
  childLogLevel?: "error" | "warn" | "info" | "debug";
  /** Node flags for the bridge process, e.g. --cpu-prof (bridge.leadingArgs changes them for the next start). */
  bridgeNodeArgs?: string[];
  /** The gateway records every frame to gateway-frames.log (default true; the benchmark turns it off). */
  recordFrames?: boolean;
  /** Where the homeserver sends transactions (a test's proxy in front of the bridge); the bridge's own listener by default. */
  registrationUrl?: string;
  /** More appservice registrations for Synapse to load besides the bridge's (the benchmark's probe); ignored against an existing homeserver. */
  extraRegistrations?: string[];
  /** Synapse's encryption_enabled_by_default_for_room_type (default "off"). */
  encryptByDefault?: "all" | "invite" | "off";
}

export const HOME_DOMAIN = "whatsapp.example";
export const PROVIDER_DOMAIN = "matrix.localhost";
/** Random per test process, like every secret of a stack: the bridge refuses known and short ones. */
export const PROVISIONING_SECRET = crypto.randomBytes(24).toString("hex");

/** The gateway's provider secrets and the bridge's store key of one stack. */
export interface StackSecrets {
  /** The bridge's secret on the gateway (network.provider_secret). */
  bridgeProviderSecret: string;
  /** The home provider's (the simulated WhatsApp side's) secret on the gateway. */
  homeProviderSecret: string;
  /** network.store_key. */
  storeKey: string;
}

/**
 * Random secrets, kept in the stack's folder (0600) so that a folder used again (the demo's
 * demo-data) keeps its store key: the bridge's database is encrypted under it.
 */
function stackSecrets(dir: string): StackSecrets {
  const file = path.join(dir, "secrets.json");
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as StackSecrets;
  } catch {
    const random = () => crypto.randomBytes(24).toString("hex");
    const secrets: StackSecrets = { bridgeProviderSecret: random(), homeProviderSecret: random(), storeKey: random() };
    fs.writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
    return secrets;
  }
}

/**
 * A whole product stack for one e2e test file: a real Synapse, our gateway, the WhatsApp
 * simulator and the bridge, each its own process on loopback, all started from the project's
 * own files. Against an existing homeserver (MATRIX_HOMESERVER_URL, see docs/testing.md) the
 * bridge uses the registration named by MATRIX_BRIDGE_REGISTRATION instead of a fresh one.
 */
export class Stack {
  readonly sim: SimApi;
  private clients: TestClient[] = [];
  private adminClient: TestClient | undefined;

  private constructor(
    readonly name: string,
    readonly dir: string,
    readonly hs: TestHomeserver,
    readonly configPath: string,
    readonly registrationPath: string,
    readonly gateway: ManagedProcess,
    readonly simProcess: ManagedProcess,
    readonly bridge: ManagedProcess,
    simUrl: string,
    readonly gatewayUrl: string,
    /** The bridge's appservice listener (also serves the provisioning API). */
    readonly appserviceUrl: string,
    /** The bridge's /metrics, /health and /ready listener. */
    readonly metricsUrl: string,
    readonly secrets: StackSecrets,
  ) {
    this.sim = new SimApi(simUrl);
  }

  get domain(): string {
    return this.hs.serverName;
  }

  ghostId(phone: string): string {
    return `@whatsapp_${phone.replace(/^\+/, "")}:${this.domain}`;
  }

  get botId(): string {
    return `@interopbot:${this.domain}`;
  }

  static async start(name: string, opts: StackOptions = {}): Promise<Stack> {
    const root = repoRoot();
    const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `mib-${name}-`));
    fs.mkdirSync(dir, { recursive: true });
    const ports = opts.ports ?? {};
    const asPort = ports.appservice ?? (await freePort());
    const mediaPort = ports.media ?? (await freePort());
    const metricsPort = ports.metrics ?? (await freePort());
    const gatewayPort = ports.gateway ?? (await freePort());
    const simPort = ports.sim ?? (await freePort());
    const configPath = path.join(dir, "config.yaml");
    const secrets = stackSecrets(dir);
    const existingRegistration = process.env.MATRIX_HOMESERVER_URL ? process.env.MATRIX_BRIDGE_REGISTRATION : undefined;
    if (process.env.MATRIX_HOMESERVER_URL && !existingRegistration) {
      throw new Error("MATRIX_HOMESERVER_URL is set: also set MATRIX_BRIDGE_REGISTRATION to the registration file installed on that homeserver");
    }
    const registrationPath = existingRegistration ?? path.join(dir, "registration.yaml");
    const bridgePort = existingRegistration ? Number(new URL(YAML.parse(fs.readFileSync(existingRegistration, "utf8")).url).port) : asPort;
    const hsPort = ports.homeserver ?? (await freePort());
    const serverName = process.env.MATRIX_SERVER_NAME ?? "localhost";
    const config: StackBridgeConfig = {
      homeserver: { url: process.env.MATRIX_HOMESERVER_URL ?? `http://127.0.0.1:${hsPort}`, domain: serverName },
      appservice: { hostname: "127.0.0.1", port: bridgePort },
      database: { path: path.join(dir, "bridge.db") },
      network: {
        gateway_url: `ws://127.0.0.1:${gatewayPort}/v1`,
        provider_domain: PROVIDER_DOMAIN,
        provider_secret: secrets.bridgeProviderSecret,
        home_domain: HOME_DOMAIN,
        store_key: secrets.storeKey,
        // The simulator hosts the WhatsApp side's media on its control API port.
        media: { bind_hostname: "127.0.0.1", port: mediaPort, allowed_hosts: [`127.0.0.1:${simPort}`] },
      },
      // Third-Party Chats stay off by default, as in the product: tests turn them on (botRoom's enable).
      provisioning: { shared_secret: PROVISIONING_SECRET },
      metrics: { hostname: "127.0.0.1", port: metricsPort },
      // The tests' Matrix users are plain clients: encryption (on in the product) is turned on by the tests of it.
      encryption: { allow: false },
      logging: { level: opts.logLevel ?? "debug", format: "json" },
    };
    opts.bridgeConfig?.(config);
    fs.writeFileSync(configPath, YAML.stringify(config));
    const cli = path.join(root, "dist", "src", "cli.js");
    if (!existingRegistration) {
      execFileSync(process.execPath, [cli, "-r", "-u", opts.registrationUrl ?? `http://127.0.0.1:${bridgePort}`, "-c", configPath, "-f", registrationPath], { stdio: "pipe" });
    }
    // Unique per process, so stacks of parallel runs (other checkouts, the demo) never share an instance.
    const hs = await startTestHomeserver({
      registrationPath: [registrationPath, ...(opts.extraRegistrations ?? [])],
      name: `${name}-${process.pid}`,
      port: hsPort,
      purge: true,
      encryptByDefault: opts.encryptByDefault,
    });
    const gatewayUrl = `ws://127.0.0.1:${gatewayPort}/v1`;
    const childEnv: Record<string, string> = opts.childLogLevel ? { LOG_LEVEL: opts.childLogLevel } : {};
    const gateway = new ManagedProcess(
      "gateway",
      process.execPath,
      [
        path.join(root, "dist", "gateway", "main.js"),
        "--port",
        String(gatewayPort),
        "--db",
        path.join(dir, "gateway.db"),
        "--home-provider",
        HOME_DOMAIN,
        "--provider",
        `${HOME_DOMAIN}=${secrets.homeProviderSecret}`,
        "--provider",
        `${PROVIDER_DOMAIN}=${secrets.bridgeProviderSecret}`,
        ...(opts.recordFrames === false ? [] : ["--record-frames", path.join(dir, "gateway-frames.log")]),
      ],
      path.join(dir, "gateway.log"),
      childEnv,
    );
    const simProcess = new ManagedProcess(
      "sim",
      process.execPath,
      [
        path.join(root, "dist", "sim", "main.js"),
        "--gateway",
        gatewayUrl,
        "--provider",
        HOME_DOMAIN,
        "--secret",
        secrets.homeProviderSecret,
        "--port",
        String(simPort),
        "--db",
        path.join(dir, "sim.db"),
        ...(opts.simArgs ?? []),
      ],
      path.join(dir, "sim.log"),
      childEnv,
    );
    const bridge = new ManagedProcess("bridge", process.execPath, [cli, "-c", configPath, "-f", registrationPath], path.join(dir, "bridge.log"));
    const stack = new Stack(
      name,
      dir,
      hs,
      configPath,
      registrationPath,
      gateway,
      simProcess,
      bridge,
      `http://127.0.0.1:${simPort}`,
      gatewayUrl,
      `http://127.0.0.1:${bridgePort}`,
      `http://127.0.0.1:${metricsPort}`,
      secrets,
    );
    try {
      await gateway.start(/gateway listening/);
      await simProcess.start(/sim: listening/);
      bridge.leadingArgs = opts.bridgeNodeArgs ?? [];
      await stack.startBridge();
    } catch (err) {
      await stack.stop();
      throw err;
    }
    return stack;
  }

  async startBridge(): Promise<void> {
    await this.bridge.start(/bridge ready/);
  }

  async restartBridge(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.bridge.stop(signal);
    await this.startBridge();
  }

  /** A real Matrix user (registered through the admin API) with its sync loop running. */
  async user(localpart: string): Promise<TestClient> {
    const client = await registerUser(this.hs, `${localpart}_${this.name.replace(/[^a-z0-9]/g, "")}`.toLowerCase());
    await client.startSync();
    this.clients.push(client);
    return client;
  }

  /** A homeserver administrator (no sync loop), for the admin API: e.g. every room a user is in, invites included. */
  async admin(): Promise<TestClient> {
    this.adminClient ??= await registerUser(this.hs, `hsadmin_${this.name.replace(/[^a-z0-9]/g, "")}`.toLowerCase(), { admin: true });
    return this.adminClient;
  }

  /**
   * Opens the user's management room with the bot and returns its id. With `enable`, the user
   * also turns Third-Party Chats on (they start off, as in the product).
   */
  async botRoom(client: TestClient, opts: { enable?: boolean } = {}): Promise<string> {
    const roomId = await client.createRoom({ is_direct: true, invite: [this.botId], preset: "trusted_private_chat" });
    // The welcome comes once the bridge has made the user known on the network.
    await client.waitFor((e) => e.room_id === roomId && e.type === "m.room.message" && e.sender === this.botId, {
      description: "the bot's welcome in its DM",
      timeoutMs: 30_000,
    });
    if (opts.enable) await this.enable(client, roomId);
    return roomId;
  }

  /** Says `enable` in the bot room and waits for the confirmation. */
  async enable(client: TestClient, botRoom: string): Promise<void> {
    const asked = await client.sendText(botRoom, "enable");
    await client.waitFor(
      (e) =>
        e.room_id === botRoom &&
        e.sender === this.botId &&
        /Third-Party Chats (are \*\*on\*\*|were already on)/.test(String(e.content.body)) &&
        this.after(client, botRoom, asked, e.event_id),
      { description: "the bot confirming `enable`", timeoutMs: 30_000 },
    );
  }

  /** Whether event `later` comes after event `earlier` in what the client synced of a room. */
  after(client: TestClient, roomId: string, earlier: string, later: string | undefined): boolean {
    const ids = client.eventsIn(roomId).map((e) => e.event_id);
    return ids.indexOf(earlier) >= 0 && ids.indexOf(later!) > ids.indexOf(earlier);
  }

  /** The bridge's Prometheus exposition. */
  async metrics(): Promise<string> {
    const res = await fetch(`${this.metricsUrl}/metrics`);
    if (!res.ok) throw new Error(`GET /metrics answered ${res.status}`);
    return res.text();
  }

  /** One sample of a metric (0 when the series does not exist yet), e.g. metric("bridge_messages_dropped_total", {reason: "sticker"}). */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const text = await this.metrics();
    for (const line of text.split("\n")) {
      if (!line.startsWith(name)) continue;
      const m = /^([a-z_]+)(\{([^}]*)\})? (\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const have = Object.fromEntries([...(m[3] ?? "").matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
    }
    return 0;
  }

  logs(): string {
    const processes: Record<string, ManagedProcess> = { gateway: this.gateway, sim: this.simProcess, bridge: this.bridge };
    return Object.entries(processes)
      .map(([n, p]) => `--- ${n}\n${p.tail(30)}`)
      .join("\n");
  }

  async stop(): Promise<void> {
    for (const c of this.clients) await c.stopSync().catch(() => undefined);
    await this.bridge.stop();
    await this.simProcess.stop();
    await this.gateway.stop();
    await this.hs.stop();
  }
}
