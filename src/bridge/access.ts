import { BridgeStore, MatrixUserRow } from "../store";
import { BridgeUserError } from "./failure";
import { Permissions } from "./permissions";

/** Who may use the bridge (the config's permissions) and who has Third-Party Chats on (the user's setting). */
export class Access {
  constructor(
    private readonly store: BridgeStore,
    readonly permissions: Permissions,
    /** Whether a new Matrix user starts with Third-Party Chats on. */
    private readonly thirdPartyDefault: boolean,
  ) {}

  mayUse(mxid: string): boolean {
    return this.permissions.mayUse(mxid);
  }

  /** Creates the user's row on first contact; refuses users the config does not permit (nothing is created for them). */
  admitUser(mxid: string): MatrixUserRow {
    if (!this.permissions.mayUse(mxid)) throw new BridgeUserError("you are not allowed to use this bridge; ask its administrator if you think you should be", "forbidden");
    return this.store.users.getOrCreate(mxid, { thirdPartyEnabled: this.thirdPartyDefault });
  }

  /** Whether the user may use the bridge and has Third-Party Chats on: only then does anything of theirs cross. */
  optedIn(mxid: string): boolean {
    return this.permissions.mayUse(mxid) && this.store.users.get(mxid)?.thirdPartyEnabled === true;
  }
}
