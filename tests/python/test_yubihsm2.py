"""Yubico's python-yubihsm, unmodified, against `ksm emulate --hsm2` over its HTTP backend.

Run by ksm/tests/yubihsm2_python.rs, which starts the emulator (session timeout 3 s) and
sets YUBIHSM2_URL; YKGENERATE names Yubico's ykgenerate (Debian libyubikey-dev). Standard
library unittest only, so the one package to install is `yubihsm[http]`.

The OTPs come from ykgenerate; the AEADs from the emulator; the YubiKey secrets inside a
randomized AEAD are read back with `cryptography` (a python-yubihsm dependency) the way
libyubihsm's OTP example does: AES-CCM, 8-byte tag, nonce = nonce id bytes, the AEAD's
6-byte nonce, three zero bytes.
"""

import os
import struct
import subprocess
import time
import unittest

from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from yubihsm import YubiHsm
from yubihsm.core import AuthSession
from yubihsm.defs import ALGORITHM, CAPABILITY, COMMAND, ERROR, OBJECT
from yubihsm.exceptions import YubiHsmAuthenticationError, YubiHsmDeviceError
from yubihsm.objects import AuthenticationKey, OtpAeadKey

URL = os.environ.get("YUBIHSM2_URL", "http://127.0.0.1:12345")
YKGENERATE = os.environ.get("YKGENERATE", "ykgenerate")
SESSION_TIMEOUT = float(os.environ.get("YUBIHSM2_SESSION_TIMEOUT", "3"))

OTP_CAPS = (
    CAPABILITY.DECRYPT_OTP
    | CAPABILITY.CREATE_OTP_AEAD
    | CAPABILITY.RANDOMIZE_OTP_AEAD
    | CAPABILITY.REWRAP_FROM_OTP_AEAD_KEY
)
KEY_A = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
NONCE_A = 0x12345678
KEY_B = bytes(range(0x40, 0x60))  # AES-256
NONCE_B = 0x00002000

MODHEX = "cbdefghijklnrtuv"


def modhex_decode(text):
    digits = "".join("0123456789abcdef"[MODHEX.index(c)] for c in text)
    return bytes.fromhex(digits)


def ykgenerate(aes_key, uid, counter, low, high, use):
    """An OTP's 16 raw bytes, made by Yubico's ykgenerate."""
    out = subprocess.run(
        [
            YKGENERATE,
            aes_key.hex(),
            uid.hex(),
            "%04x" % counter,
            "%04x" % low,
            "%02x" % high,
            "%02x" % use,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return modhex_decode(out.stdout.strip())


def open_aead(key, nonce_id, aead):
    """YubiKey AES key and private id inside an AEAD (libyubihsm's example's way)."""
    nonce = struct.pack("<I", nonce_id) + aead[:6] + b"\0\0\0"
    plain = AESCCM(key, tag_length=8).decrypt(nonce, aead[6:], None)
    return plain[:16], plain[16:22]


class YubiHsm2Emulator(unittest.TestCase):
    """One device for the whole class; each test closes what it opens."""

    @classmethod
    def setUpClass(cls):
        cls.hsm = YubiHsm.connect(URL)
        with cls.hsm.create_session_derived(1, "password") as s:
            OtpAeadKey.put(
                s, 0x10, "ksm key a", 1, OTP_CAPS,
                ALGORITHM.AES128_YUBICO_OTP, NONCE_A, KEY_A,
            )
            OtpAeadKey.put(
                s, 0x11, "ksm key b", 1,
                CAPABILITY.DECRYPT_OTP | CAPABILITY.REWRAP_TO_OTP_AEAD_KEY,
                ALGORITHM.AES256_YUBICO_OTP, NONCE_B, KEY_B,
            )

    @classmethod
    def tearDownClass(cls):
        cls.hsm.close()

    def setUp(self):
        self.session = self.hsm.create_session_derived(1, "password")

    def tearDown(self):
        try:
            self.session.close()
        except YubiHsmDeviceError:
            pass  # a test that let it expire

    def assertDeviceError(self, code, fn, *args):
        with self.assertRaises(YubiHsmDeviceError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code, code)

    def key(self, object_id):
        return OtpAeadKey(self.session, object_id)

    # -- what the device is --------------------------------------------------------------

    def test_device_info(self):
        info = self.hsm.get_device_info()
        self.assertEqual(info.version, (2, 3, 1))
        self.assertEqual(info.serial, 7550001)
        self.assertIn(ALGORITHM.AES128_YUBICO_OTP, info.supported_algorithms)
        self.assertIn(ALGORITHM.AES256_YUBICO_OTP, info.supported_algorithms)

    def test_objects_as_put(self):
        info = self.key(0x10).get_info()
        self.assertEqual(info.object_type, OBJECT.OTP_AEAD_KEY)
        self.assertEqual(info.algorithm, ALGORITHM.AES128_YUBICO_OTP)
        self.assertEqual(info.capabilities, OTP_CAPS)
        self.assertEqual(info.label, "ksm key a")
        self.assertEqual(info.size, 16)
        listed = self.session.list_objects(object_type=OBJECT.OTP_AEAD_KEY)
        self.assertEqual(sorted(o.id for o in listed), [0x10, 0x11])
        self.assertEqual(len(self.session.get_pseudo_random(32)), 32)

    # -- the KSM's commands --------------------------------------------------------------

    def test_randomized_aead_decrypts_ykgenerate_otps(self):
        aead = self.key(0x10).randomize_otp_aead()
        self.assertEqual(len(aead), 36)
        aes_key, uid = open_aead(KEY_A, NONCE_A, aead)
        for counter, low, high, use in [(1, 1, 1, 1), (0x0102, 0x4242, 0x17, 9), (0x7fff, 0xffff, 0xff, 0xff)]:
            otp = ykgenerate(aes_key, uid, counter, low, high, use)
            got = self.key(0x10).decrypt_otp(aead, otp)
            self.assertEqual(
                (got.use_counter, got.session_counter, got.timestamp_high, got.timestamp_low),
                (counter, use, high, low),
            )

    def test_created_aead_decrypts_ykgenerate_otps(self):
        aes_key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
        uid = bytes.fromhex("010203040506")
        aead = self.key(0x10).create_otp_aead(aes_key, uid)
        self.assertEqual(open_aead(KEY_A, NONCE_A, aead), (aes_key, uid))
        otp = ykgenerate(aes_key, uid, 5, 0x1234, 0x56, 7)
        got = self.key(0x10).decrypt_otp(aead, otp)
        self.assertEqual(tuple(got), (5, 7, 0x56, 0x1234))
        # The C example's vector (shared notes section 5.3), counters 1/1/1/1.
        got = self.key(0x10).decrypt_otp(aead, bytes.fromhex("2f5d71a4915dec304aa13ccf97bb0dbb"))
        self.assertEqual(tuple(got), (1, 1, 1, 1))

    def test_rewrap_to_a_second_key(self):
        aes_key, uid = os.urandom(16), os.urandom(6)
        aead = self.key(0x10).create_otp_aead(aes_key, uid)
        moved = self.key(0x10).rewrap_otp_aead(0x11, aead)
        self.assertEqual(open_aead(KEY_B, NONCE_B, moved), (aes_key, uid))
        otp = ykgenerate(aes_key, uid, 3, 0x10, 0x20, 4)
        got = self.key(0x11).decrypt_otp(moved, otp)
        self.assertEqual(tuple(got), (3, 4, 0x20, 0x10))
        # Each key opens only its own AEADs.
        self.assertDeviceError(ERROR.INVALID_OTP, self.key(0x10).decrypt_otp, moved, otp)

    def test_generated_key(self):
        k = OtpAeadKey.generate(
            self.session, 0, "generated", 1,
            CAPABILITY.RANDOMIZE_OTP_AEAD | CAPABILITY.DECRYPT_OTP,
            ALGORITHM.AES192_YUBICO_OTP, 0x01020304,
        )
        try:
            self.assertEqual(k.get_info().size, 24)
            self.assertEqual(len(k.randomize_otp_aead()), 36)
        finally:
            k.delete()
        self.assertDeviceError(ERROR.OBJECT_NOT_FOUND, k.get_info)

    # -- refusals ------------------------------------------------------------------------

    def test_wrong_password_is_caught_by_the_client(self):
        with self.assertRaises(YubiHsmAuthenticationError):
            self.hsm.create_session_derived(1, "not the password")

    def test_forged_authentication_is_refused_by_the_device(self):
        created = self.hsm.send_cmd(COMMAND.CREATE_SESSION, struct.pack("!H", 1) + os.urandom(8))
        sid = created[0]
        self.assertDeviceError(
            ERROR.AUTHENTICATION_FAILED,
            self.hsm.send_cmd, COMMAND.AUTHENTICATE_SESSION, bytes([sid]) + os.urandom(16),
        )

    def test_missing_capability(self):
        with self.hsm.create_session_derived(1, "password") as admin:
            AuthenticationKey.put_derived(
                admin, 0x20, "decrypt only", 1, CAPABILITY.DECRYPT_OTP, 0, "decrypt-only password"
            )
        try:
            with self.hsm.create_session_derived(0x20, "decrypt-only password") as s:
                self.assertDeviceError(
                    ERROR.INSUFFICIENT_PERMISSIONS, OtpAeadKey(s, 0x10).randomize_otp_aead
                )
                self.assertDeviceError(ERROR.INSUFFICIENT_PERMISSIONS, s.get_pseudo_random, 8)
        finally:
            AuthenticationKey(self.session, 0x20).delete()
        # Key b lacks randomize-otp-aead, even for the all-powerful session.
        self.assertDeviceError(ERROR.INSUFFICIENT_PERMISSIONS, self.key(0x11).randomize_otp_aead)

    def test_object_not_found(self):
        self.assertDeviceError(ERROR.OBJECT_NOT_FOUND, self.key(0x99).randomize_otp_aead)
        self.assertDeviceError(
            ERROR.OBJECT_NOT_FOUND, self.key(0x99).decrypt_otp, bytes(36), bytes(16)
        )

    def test_object_outside_the_sessions_domains(self):
        with self.hsm.create_session_derived(1, "password") as admin:
            AuthenticationKey.put_derived(
                admin, 0x21, "domain 2", 2, CAPABILITY.DECRYPT_OTP, 0, "domain two"
            )
        try:
            with self.hsm.create_session_derived(0x21, "domain two") as s:
                self.assertDeviceError(
                    ERROR.OBJECT_NOT_FOUND, OtpAeadKey(s, 0x10).decrypt_otp, bytes(36), bytes(16)
                )
        finally:
            AuthenticationKey(self.session, 0x21).delete()

    def test_invalid_data_and_invalid_otp(self):
        aes_key, uid = os.urandom(16), os.urandom(6)
        aead = self.key(0x10).create_otp_aead(aes_key, uid)
        tampered = aead[:10] + bytes([aead[10] ^ 1]) + aead[11:]
        self.assertDeviceError(ERROR.INVALID_DATA, self.key(0x10).rewrap_otp_aead, 0x11, tampered)
        otp = bytearray(ykgenerate(aes_key, uid, 1, 2, 3, 4))
        otp[3] ^= 0x40
        self.assertDeviceError(ERROR.INVALID_OTP, self.key(0x10).decrypt_otp, aead, bytes(otp))
        self.assertDeviceError(ERROR.INVALID_OTP, self.key(0x10).decrypt_otp, tampered, bytes(otp))
        # An algorithm the device does not have for authentication keys.
        self.assertDeviceError(
            ERROR.INVALID_DATA,
            self.session.send_secure_cmd,
            COMMAND.PUT_AUTHENTICATION_KEY,
            struct.pack("!H40sHQBQ", 0x30, b"", 1, 0, ALGORITHM.AES128_YUBICO_OTP, 0) + bytes(32),
        )

    def test_object_exists(self):
        self.assertDeviceError(
            ERROR.OBJECT_EXISTS, OtpAeadKey.put, self.session, 0x10, "again", 1,
            CAPABILITY.DECRYPT_OTP, ALGORITHM.AES128_YUBICO_OTP, 1, bytes(16),
        )

    def test_sessions_full(self):
        opened = []
        try:
            # This test's own session is one of the sixteen.
            for _ in range(15):
                opened.append(self.hsm.create_session_derived(1, "password"))
            self.assertDeviceError(
                ERROR.SESSIONS_FULL, self.hsm.create_session_derived, 1, "password"
            )
        finally:
            for s in opened:
                s.close()
        self.hsm.create_session_derived(1, "password").close()

    def test_idle_session_expires(self):
        self.session.get_pseudo_random(1)
        time.sleep(SESSION_TIMEOUT + 0.5)
        self.assertDeviceError(ERROR.INVALID_SESSION, self.session.get_pseudo_random, 1)
        with self.hsm.create_session_derived(1, "password") as s:
            self.assertEqual(len(s.get_pseudo_random(4)), 4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
