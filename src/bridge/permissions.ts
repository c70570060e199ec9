/**
 * Who may use the bridge (config `bridge.permissions`). A rule's key is a Matrix user id
 * ("@alice:example.org"), a server ("example.org" or "@*:example.org") or "*" for everyone; its
 * value is a level. The most specific rule that matches a user decides: user id, then server,
 * then "*". A user no rule matches may not use the bridge.
 */
export type PermissionLevel = "none" | "user" | "admin";

export const PERMISSION_LEVELS: readonly PermissionLevel[] = ["none", "user", "admin"];

const USER_ID_RE = /^@[^:\s]+:([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$/;
const SERVER_RE = /^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$/;

/** The server name of a Matrix user id (lowercased: server names compare case-insensitively), or null. */
export function serverOf(mxid: string): string | null {
  if (!USER_ID_RE.test(mxid)) return null;
  return mxid.slice(mxid.indexOf(":") + 1).toLowerCase();
}

/** Why a permissions key is not usable, or null when it is. */
export function permissionKeyProblem(key: string): string | null {
  if (key === "*") return null;
  if (key.startsWith("@*:")) return SERVER_RE.test(key.slice(3)) ? null : `"${key}" has no valid server name after "@*:"`;
  if (key.startsWith("@")) return USER_ID_RE.test(key) ? null : `"${key}" is not a Matrix user id (@localpart:server)`;
  return SERVER_RE.test(key) ? null : `"${key}" is neither "*", a Matrix user id, "@*:server" nor a server name`;
}

export class Permissions {
  private readonly users = new Map<string, PermissionLevel>();
  private readonly servers = new Map<string, PermissionLevel>();
  private readonly everyone: PermissionLevel;

  constructor(rules: Record<string, PermissionLevel>) {
    let everyone: PermissionLevel = "none";
    for (const [key, level] of Object.entries(rules)) {
      const problem = permissionKeyProblem(key);
      if (problem) throw new Error(problem);
      if (key === "*") everyone = level;
      else if (key.startsWith("@*:")) this.servers.set(key.slice(3).toLowerCase(), level);
      else if (key.startsWith("@")) this.users.set(key, level);
      else this.servers.set(key.toLowerCase(), level);
    }
    this.everyone = everyone;
  }

  levelOf(mxid: string): PermissionLevel {
    const exact = this.users.get(mxid);
    if (exact) return exact;
    const server = serverOf(mxid);
    if (server === null) return "none";
    return this.servers.get(server) ?? this.everyone;
  }

  mayUse(mxid: string): boolean {
    return this.levelOf(mxid) !== "none";
  }

  isAdmin(mxid: string): boolean {
    return this.levelOf(mxid) === "admin";
  }
}
