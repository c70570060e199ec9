import fs from "node:fs";
import path from "node:path";
import Ajv, { ErrorObject } from "ajv";
import YAML from "yaml";
import { PermissionLevel, permissionKeyProblem } from "./bridge/permissions";
import { LogLevel } from "./logging";
import type { InteropNetworkConfig } from "./network/interop-settings";

/** The validated configuration (config/config.sample.yaml documents every key). */
export interface BridgeConfig {
  homeserver: { url: string; domain: string };
  appservice: {
    hostname: string;
    port: number;
    id: string;
    /** avatar: an mxc:// URI, or "" for none. */
    bot: { localpart: string; displayname: string; avatar: string };
    ghosts: { localpart_template: string; displayname_template: string };
  };
  database: { path: string };
  network: InteropNetworkConfig;
  bridge: {
    permissions: Record<string, PermissionLevel>;
    third_party_chats_default: boolean;
    edit_window_seconds: number;
    message_status_events: boolean;
    sent_status_delay_ms: number;
    media_download_attempts: number;
  };
  provisioning: { enabled: boolean; shared_secret?: string };
  metrics: { enabled: boolean; hostname: string; port: number };
  /** End-to-bridge encryption (docs/encryption.md); store_path is filled in from the database's folder when not set. */
  encryption: {
    allow: boolean;
    default: boolean;
    require: boolean;
    store_path: string;
    store_key?: string;
    room_key_wait_seconds: number;
    delete_keys: { delete_previous_on_new_session: boolean; delete_on_forget_room: boolean };
  };
  logging: { level: LogLevel; format: "pretty" | "json" };
}

/** A config problem, worded for the admin: "<field>: <what is wrong>". */
export class ConfigError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${field || "config"}: ${problem}`);
    this.name = "ConfigError";
  }
}

export const CONFIG_SCHEMA_PATH = path.resolve(__dirname, "..", "..", "config", "config.schema.json");

let validator: ReturnType<Ajv["compile"]> | undefined;
function compiledSchema() {
  if (!validator) {
    const schema = JSON.parse(fs.readFileSync(CONFIG_SCHEMA_PATH, "utf8"));
    // useDefaults fills the optional sections so the rest of the code never sees undefined.
    validator = new Ajv({ allErrors: false, useDefaults: true, strict: false, verbose: true }).compile(schema);
  }
  return validator;
}

function describe(error: ErrorObject, schemaDescription?: string): ConfigError {
  const where = error.instancePath.replace(/^\//, "").replace(/\//g, ".");
  switch (error.keyword) {
    case "required":
      return new ConfigError(where ? `${where}.${error.params.missingProperty}` : String(error.params.missingProperty), "is missing");
    case "additionalProperties":
      return new ConfigError(
        where ? `${where}.${error.params.additionalProperty}` : String(error.params.additionalProperty),
        "is not a known setting (check the spelling against config/config.sample.yaml)",
      );
    case "enum":
      return new ConfigError(where, `must be one of ${(error.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(", ")}`);
    case "pattern":
      return new ConfigError(where, `must be ${schemaDescription ?? `a string matching ${error.params.pattern}`}`);
    case "minLength":
      return new ConfigError(where, schemaDescription ? `must be ${schemaDescription}` : `must not be empty`);
    default:
      return new ConfigError(where, error.message ?? "is invalid");
  }
}

/** Validates a parsed config object in place (filling defaults) and returns it typed. */
export function validateConfig(raw: unknown, configDir = process.cwd()): BridgeConfig {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError("config", "must be a YAML mapping (see config/config.sample.yaml)");
  }
  const validate = compiledSchema();
  if (!validate(raw)) {
    const error = validate.errors![0];
    throw describe(error, (error.parentSchema as { description?: string } | undefined)?.description);
  }
  const config = raw as BridgeConfig;
  if (!path.isAbsolute(config.database.path)) config.database.path = path.resolve(configDir, config.database.path);
  const media = config.network.media;
  media.directory = media.directory ? path.resolve(configDir, media.directory) : path.join(path.dirname(config.database.path), "media");
  const encryption = config.encryption;
  encryption.store_path = encryption.store_path ? path.resolve(configDir, encryption.store_path) : path.join(path.dirname(config.database.path), "crypto.db");
  if (encryption.require && !encryption.allow) throw new ConfigError("encryption.require", "needs encryption.allow");
  if (!config.network.media.public_url) {
    config.network.media.public_url = `http://${config.network.media.bind_hostname}:${config.network.media.port}`;
  }
  if (config.appservice.bot.localpart === config.appservice.ghosts.localpart_template.replace("{phone}", "")) {
    throw new ConfigError("appservice.bot.localpart", "must not fall inside the ghost namespace");
  }
  const botInGhostSpace = new RegExp(`^${ghostLocalpartRegex(config)}$`).test(config.appservice.bot.localpart);
  if (botInGhostSpace) throw new ConfigError("appservice.bot.localpart", "must not fall inside the ghost namespace");
  // Without rules, the homeserver's own users may use the bridge and nobody else.
  config.bridge.permissions ??= { [config.homeserver.domain]: "user" };
  for (const key of Object.keys(config.bridge.permissions)) {
    const problem = permissionKeyProblem(key);
    if (problem) throw new ConfigError(`bridge.permissions.${key}`, `${problem}`);
  }
  checkSecrets(config);
  return config;
}

/** The shortest secret accepted: anything shorter can be guessed offline from a stolen database. */
export const MIN_SECRET_LENGTH = 16;

/**
 * Values published in config/config.sample.yaml, registration.yaml and the docs. A bridge started
 * with one would authenticate with, or encrypt every user's Signal keys under, a key anyone can read.
 */
const KNOWN_PLACEHOLDERS: ReadonlySet<string> = new Set(["change-me", "change-me-too", "changeme", "a-long-random-secret-string", "secret", "password"]);

/** Why a secret may not be used, or null when it may. */
export function secretProblem(value: string): string | null {
  const v = value.trim().toLowerCase();
  if (KNOWN_PLACEHOLDERS.has(v) || v.includes("change-me") || v.includes("changeme")) return "is a placeholder from the sample config";
  if (value.length < MIN_SECRET_LENGTH) return `is shorter than ${MIN_SECRET_LENGTH} characters`;
  return null;
}

interface SecretSetting {
  field: string;
  env: string;
  get(c: BridgeConfig): string | undefined;
  set(c: BridgeConfig, value: string): void;
  /** What to put there, for the error line. */
  advice: string;
  optional?: boolean;
}

const SECRET_SETTINGS: SecretSetting[] = [
  {
    field: "network.provider_secret",
    env: "BRIDGE_PROVIDER_SECRET",
    get: (c) => c.network.provider_secret,
    set: (c, v) => (c.network.provider_secret = v),
    advice: "the secret the gateway's operator registered for network.provider_domain",
  },
  {
    field: "network.store_key",
    env: "BRIDGE_STORE_KEY",
    get: (c) => c.network.store_key,
    set: (c, v) => (c.network.store_key = v),
    advice: "a random secret, e.g. `openssl rand -hex 32` (keep it: changing it loses every Signal session)",
  },
  {
    field: "provisioning.shared_secret",
    env: "BRIDGE_PROVISIONING_SECRET",
    get: (c) => c.provisioning.shared_secret,
    set: (c, v) => (c.provisioning.shared_secret = v),
    advice: "a random secret, e.g. `openssl rand -hex 32`, or leave it out to accept users' own access tokens only",
    optional: true,
  },
];

/** Applies the secrets' environment overrides, then refuses missing, placeholder and short ones. */
function checkSecrets(config: BridgeConfig): void {
  for (const s of SECRET_SETTINGS) {
    const fromEnv = process.env[s.env];
    if (fromEnv !== undefined && fromEnv !== "") s.set(config, fromEnv);
    const value = s.get(config);
    const where = `${s.field} (or environment variable ${s.env})`;
    if (value === undefined || value === "") {
      if (s.optional) continue;
      throw new ConfigError(where, `is missing: set ${s.advice}`);
    }
    const problem = secretProblem(value);
    if (problem) throw new ConfigError(where, `${problem}: set ${s.advice}, at least ${MIN_SECRET_LENGTH} characters`);
  }
}

/** Reads and validates a YAML config file. */
export function loadConfig(file: string): BridgeConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError("config", code === "ENOENT" ? `file ${file} does not exist` : `cannot read ${file} (${code})`);
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (err) {
    const e = err as { linePos?: { line: number }[]; message: string };
    const line = e.linePos?.[0]?.line;
    throw new ConfigError("config", `${file} is not valid YAML${line ? ` (line ${line})` : ""}: ${e.message.split("\n")[0]}`);
  }
  return validateConfig(raw, path.dirname(path.resolve(file)));
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** The regex (without anchors) that matches ghost localparts, for the registration namespace. */
export function ghostLocalpartRegex(config: BridgeConfig): string {
  const [before, after] = config.appservice.ghosts.localpart_template.split("{phone}");
  return `${escapeRegex(before)}[0-9]+${escapeRegex(after)}`;
}
