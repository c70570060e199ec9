import { ErrorCode, LibSignalErrorBase } from "@signalapp/libsignal-client";

/**
 * Every failure the Signal layer reports. Callers switch on `code`, never on `message`
 * (messages are for logs and deliberately carry no peer addresses, which are personal data).
 */
export type SignalLayerErrorCode =
  /** Whisper message from a peer we have no session with (e.g. we reset, they did not). */
  | "no_session"
  /** Malformed, tampered, or undecryptable ciphertext, or one referring to prekeys we no longer hold. */
  | "bad_message"
  /** A message (or a replayed PreKey message) that was already decrypted once; safe to drop. */
  | "duplicate_message"
  /** libsignal refused the peer identity; kept for completeness, the TOFU policy never triggers it. */
  | "untrusted_identity"
  /** A directory bundle that is malformed or whose prekey signatures do not verify. */
  | "bad_bundle"
  /** Encryption failed for a reason other than the above (a damaged session record, say). */
  | "encrypt_failed"
  /** EncryptedRecordStore read a record written under a different key. */
  | "bad_store_key"
  /** A stored record failed authentication or does not parse (tampered, swapped, truncated). */
  | "corrupt_record"
  /** The underlying SignalRecordStore threw. */
  | "store_error"
  /** The party was forgotten; the object must not be used any more. */
  | "forgotten"
  /** The caller passed something unusable (wrong key length, empty address, ...). */
  | "bad_argument";

export class SignalLayerError extends Error {
  override readonly name = "SignalLayerError";

  constructor(
    readonly code: SignalLayerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Maps whatever libsignal (or a store callback) threw to a SignalLayerError with a stable code. */
export function toSignalLayerError(err: unknown, fallback: SignalLayerErrorCode, what: string): SignalLayerError {
  if (err instanceof SignalLayerError) return err;
  if (err instanceof LibSignalErrorBase) {
    switch (err.code) {
      case ErrorCode.DuplicatedMessage:
        return new SignalLayerError("duplicate_message", `${what}: message already received`, { cause: err });
      case ErrorCode.UntrustedIdentity:
        return new SignalLayerError("untrusted_identity", `${what}: untrusted identity`, { cause: err });
      case ErrorCode.InvalidSession:
        return new SignalLayerError("no_session", `${what}: no usable session`, { cause: err });
      default:
        // libsignal's own text never holds key material; it may hold the peer address, so only in `cause`.
        return new SignalLayerError(fallback, `${what}: ${ErrorCode[err.code] ?? "error"} in ${err.operation}`, {
          cause: err,
        });
    }
  }
  return new SignalLayerError(fallback, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
