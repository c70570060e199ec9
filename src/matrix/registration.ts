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
  return reg;
}
