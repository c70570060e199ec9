import crypto from "node:crypto";
import { AppServiceRegistration } from "matrix-appservice-bridge";
import { BridgeConfig, ghostLocalpartRegex } from "../config";

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * A random `sender_localpart`. The homeserver keeps no profile for an appservice's sender user
 * (Synapse: "No row found (profiles)" when it sets a display name), so the bot the users talk to
 * is another user, in the exclusive namespace, and the sender is a name nobody sees (MSC2190's
 * workaround, as mautrix bridges do). Lowercase hex: valid in any localpart, never in the ghost
 * namespace.
 */
export function randomSenderLocalpart(): string {
  return `interop-as-${crypto.randomBytes(12).toString("hex")}`;
}

/** Placeholder tokens of the registration.yaml template and the docs: `-r` writes real ones. */
const PLACEHOLDER_TOKEN = /change-?me|generate-with|placeholder/i;

/**
 * Fills a registration for this bridge: random tokens, a random sender, the ghosts' and the
 * bot's exclusive user namespace. `url` is where the homeserver reaches the appservice.
 */
export function fillRegistration(reg: AppServiceRegistration, config: BridgeConfig, url: string): AppServiceRegistration {
  reg.setId(config.appservice.id);
  reg.setAppServiceUrl(url);
  reg.setHomeserverToken(AppServiceRegistration.generateToken());
  reg.setAppServiceToken(AppServiceRegistration.generateToken());
  reg.setSenderLocalpart(randomSenderLocalpart());
  reg.setRateLimited(false);
  const domain = escapeRegex(config.homeserver.domain);
  // Anchored: homeservers match from the start only, so an open end would claim longer ids too.
  reg.addRegexPattern("users", `^@${ghostLocalpartRegex(config)}:${domain}$`, true);
  reg.addRegexPattern("users", `^@${escapeRegex(config.appservice.bot.localpart)}:${domain}$`, true);
  // Typing and receipts reach appservices only with this (matrix-appservice reads the MSC2409 key).
  reg.pushEphemeral = true;
  withEncryptionKeys(reg);
  return reg;
}

/** What a registration file says that the bridge cannot run with, worded for the admin. */
export interface RegistrationCheck {
  /** Stops the bridge: one line, exit 1. */
  error?: string;
  /** The bridge runs, but the admin should change something: one warning at start. */
  warning?: string;
}

/** Checks a loaded registration against the config before anything connects. */
export function checkRegistration(reg: AppServiceRegistration, config: BridgeConfig, file: string): RegistrationCheck {
  const regen = `generate it with: matrix-interop-bridge -r -u <url the homeserver reaches the bridge at> -c <config> -f ${file}, then restart the homeserver`;
  const tokens = [
    ["as_token", reg.getAppServiceToken()],
    ["hs_token", reg.getHomeserverToken()],
  ] as const;
  for (const [key, token] of tokens) {
    if (!token) return { error: `${file}: ${key} is missing; ${regen}` };
    if (PLACEHOLDER_TOKEN.test(token) || token.length < 16) return { error: `${file}: ${key} is a placeholder (the repository's template); ${regen}` };
  }
  const bot = `@${config.appservice.bot.localpart}:${config.homeserver.domain}`;
  if (!reg.isUserMatch(bot, true)) {
    return { error: `${file}: its exclusive user namespace does not contain the bot ${bot} (appservice.bot.localpart); ${regen}` };
  }
  const sender = reg.getSenderLocalpart();
  if (!sender || PLACEHOLDER_TOKEN.test(sender)) return { error: `${file}: sender_localpart is ${sender ? "a placeholder" : "missing"}; ${regen}` };
  if (sender === config.appservice.bot.localpart) {
    // Written by versions before the random sender: the bridge works, but Synapse keeps no profile for the sender, so the bot has no display name or avatar.
    return {
      warning:
        `${file}: sender_localpart is the bot's own localpart "${sender}" (a registration from an earlier version), so the homeserver keeps no profile for the bot and it shows without its name; ` +
        `set sender_localpart to a random string (e.g. interop-as-$(openssl rand -hex 12)) or regenerate the file with -r, and restart the homeserver`,
    };
  }
  return {};
}

/**
 * Encrypted rooms (docs/encryption.md): MSC4190 lets the appservice create its users' devices
 * without logins (also behind the Matrix Authentication Service), and MSC3202 lets it act as
 * those devices and receive their to-device events, device lists and key counts. The library's
 * getOutput writes only the keys it knows, so these two are added to its output.
 */
export const ENCRYPTION_REGISTRATION_KEYS = { "io.element.msc4190": true, "org.matrix.msc3202": true } as const;

function withEncryptionKeys(reg: AppServiceRegistration): void {
  const output = reg.getOutput.bind(reg);
  reg.getOutput = () => ({ ...output(), ...ENCRYPTION_REGISTRATION_KEYS }) as ReturnType<AppServiceRegistration["getOutput"]>;
}
