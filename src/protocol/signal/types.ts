/** Every party has exactly one device; interop users are addressed per account, not per device. */
export const SIGNAL_DEVICE_ID = 1 as const;

/** Values of `SignalCiphertext.type`; these are libsignal's CiphertextMessageType numbers. */
export const SignalMessageType = {
  /** Ordinary Double Ratchet message on an established session. */
  Whisper: 2,
  /** Session-establishing message; sent until the peer has replied once. */
  PreKey: 3,
} as const;

export interface SignedPublicKey {
  id: number;
  /** libsignal serialized public key (EC: 33 bytes with type prefix; Kyber: 1569 bytes). */
  publicKey: Uint8Array;
  /** XEdDSA signature by the identity key over `publicKey`. */
  signature: Uint8Array;
}

export interface OneTimePreKey {
  id: number;
  publicKey: Uint8Array;
}

/** What a party uploads to the gateway's key directory. */
export interface PublishedKeys {
  registrationId: number;
  deviceId: 1;
  identityKey: Uint8Array;
  signedPreKey: SignedPublicKey;
  /** Last-resort Kyber prekey: reused by every fetcher, never deleted on use. */
  kyberPreKey: SignedPublicKey;
  oneTimePreKeys: OneTimePreKey[];
}

/** What the directory hands one fetcher: the published keys with at most one one-time key, which it then drops. */
export interface PreKeyBundleData {
  registrationId: number;
  deviceId: 1;
  identityKey: Uint8Array;
  signedPreKey: SignedPublicKey;
  kyberPreKey: SignedPublicKey;
  /** Absent when the directory has run out; the session then rests on the signed and Kyber keys. */
  oneTimePreKey?: OneTimePreKey;
}

export interface SignalCiphertext {
  /** SignalMessageType.PreKey or SignalMessageType.Whisper. */
  type: number;
  body: Uint8Array;
}

export interface SignalPartyOptions {
  /**
   * Called once each time a peer's stored identity key is replaced by a different one (the
   * new key is already trusted and saved). Runs after the encrypt/decrypt that noticed it;
   * exceptions it throws are logged and swallowed.
   */
  onIdentityChange?: (peer: string, oldKey: Uint8Array, newKey: Uint8Array) => void;
}
