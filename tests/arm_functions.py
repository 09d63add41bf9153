"""ARM's template functions that name resources, written from their public descriptions, for the infra tests.

- ``arm_unique_string``: ``uniqueString()``, a 64-bit MurmurHash variant (Microsoft's, in
  Azure.Deployments.Expression) of the values joined with '-', in 13 base32 digits. Every
  32-bit step is unsigned arithmetic, the partial last word included.
- ``azapi_unique_string``: the same, with the one difference of azapi's
  ``provider::azapi::unique_string`` (internal/services/functions/unique_string_function.go,
  v2.4.0 to at least v2.12.0): the partial second word of a 5-7 byte tail is multiplied as a
  signed 32-bit integer and then *negated* when negative (``safeInt32ToUint32``) where ARM
  reinterprets the bits. So the two differ exactly when the input's length is 5-7 modulo 8 and
  that product has its top bit set.
- ``arm_guid``: ``guid()``, a version-5 UUID (RFC 4122 section 4.3, SHA-1) of the values joined
  with '-' in the namespace below (MicrosoftDocs/azure-docs#121776 names the RFC algorithm; the
  namespace is the one public reimplementations use). Terraform's ``uuidv5(namespace, name)``
  takes any namespace UUID, so it computes the same value.
"""

from __future__ import annotations

import uuid

ARM_GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")

_MASK = 0xFFFFFFFF
_C1, _C2 = 597_399_067, 2_869_860_233
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _fmix(x: int) -> int:
    x ^= x >> 16
    x = (x * 2_246_822_507) & _MASK
    x ^= x >> 13
    x = (x * 3_266_489_909) & _MASK
    return x ^ (x >> 16)


def _tail_word(product: int, negate_signed: bool) -> int:
    if negate_signed and product >= 1 << 31:  # Go: uint32(-int32(product)) for a negative int32
        return (-(product - (1 << 32))) & _MASK
    return product


def _murmur64(data: bytes, negate_signed_tail: bool) -> int:
    h1 = h2 = 0
    full = len(data) // 8 * 8
    for i in range(0, full, 8):
        k1, k2 = int.from_bytes(data[i : i + 4], "little"), int.from_bytes(data[i + 4 : i + 8], "little")
        h1 ^= _rotl(k1 * _C1 & _MASK, 15) * _C2 & _MASK
        h1 = (_rotl(h1, 19) + h2) * 5 + 1_444_728_091 & _MASK
        h2 ^= _rotl(k2 * _C2 & _MASK, 17) * _C1 & _MASK
        h2 = (_rotl(h2, 13) + h1) * 5 + 197_830_471 & _MASK
    tail = data[full:]
    if tail:
        h1 ^= _rotl(int.from_bytes(tail[:4], "little") * _C1 & _MASK, 15) * _C2 & _MASK
        if len(tail) > 4:
            word = _tail_word(int.from_bytes(tail[4:], "little") * _C2 & _MASK, negate_signed_tail)
            h2 ^= _rotl(word, 17) * _C1 & _MASK
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & _MASK
    h2 = (h2 + h1) & _MASK
    return (h2 << 32) | h1


def _base32(value: int) -> str:
    # Thirteen 5-bit digits from the top of the 64-bit value; the last has 4 bits and a zero.
    shifted = value << 1
    return "".join(_ALPHABET[(shifted >> (60 - 5 * k)) & 31] for k in range(13))


def arm_unique_string(*values: str) -> str:
    """ARM's uniqueString(values...)."""
    return _base32(_murmur64("-".join(values).encode("utf-8"), negate_signed_tail=False))


def azapi_unique_string(*values: str) -> str:
    """azapi's provider::azapi::unique_string(values): ARM's, except for the signed tail word."""
    return _base32(_murmur64("-".join(values).encode("utf-8"), negate_signed_tail=True))


def arm_guid(*values: str) -> str:
    """ARM's guid(values...)."""
    return str(uuid.uuid5(ARM_GUID_NAMESPACE, "-".join(values)))


def arm_resource_id(subscription: str, resource_group: str, resource_type: str, *names: str) -> str:
    """ARM's resourceId() at resource-group scope: type segments and names interleaved, spelled as given."""
    namespace, *types = resource_type.split("/")
    assert len(types) == len(names), (resource_type, names)
    segments = "/".join(f"{kind}/{name}" for kind, name in zip(types, names, strict=True))
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{namespace}/{segments}"
