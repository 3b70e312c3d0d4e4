// Credential fingerprints as the engine makes them: HMAC-SHA256 of the value under the data
// dir's key (kept in the keychain), 16 hex digits. A suite cannot recompute one; it checks
// their shape, that they are no unkeyed hash of the value, and that they agree: what the API
// reports for the value in force equals what the trail recorded for the requests that
// carried it, and a rotation changes it.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

/** Asserts `fingerprint` looks like the keyed fingerprint of `value`. */
export function assertKeyedFingerprint(fingerprint, value) {
  assert.match(fingerprint, /^[0-9a-f]{16}$/, `fingerprint ${fingerprint}`);
  const plain = createHash("sha256").update(value).digest("hex");
  assert.ok(!plain.startsWith(fingerprint.slice(0, 8)), "the fingerprint is an unkeyed SHA-256 of the value");
}
