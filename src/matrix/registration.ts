import { AppServiceRegistration } from "matrix-appservice-bridge";
import { BridgeConfig, ghostLocalpartRegex } from "../config";

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * Fills a registration for this bridge: random tokens, the bot's localpart, and the ghosts'
 * exclusive user namespace. `url` is where the homeserver reaches the appservice.
 */
export function fillRegistration(reg: AppServiceRegistration, config: BridgeConfig, url: string): AppServiceRegistration {
  reg.setId(config.appservice.id);
  reg.setAppServiceUrl(url);
  reg.setHomeserverToken(AppServiceRegistration.generateToken());
  reg.setAppServiceToken(AppServiceRegistration.generateToken());
  reg.setSenderLocalpart(config.appservice.bot.localpart);
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
