"""The image reference grammar: names normalised as Docker does, digests checked."""

from __future__ import annotations

import pytest

from mpcontainer_magics.errors import ImageError, InvalidArgument, MPCError
from mpcontainer_magics.registry.reference import HUB, Reference, check_digest

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest", "familiar", "full"),
    [
        ("alpine", HUB, "library/alpine", "latest", None, "alpine:latest",
         f"{HUB}/library/alpine:latest"),
        ("alpine:3.16", HUB, "library/alpine", "3.16", None, "alpine:3.16",
         f"{HUB}/library/alpine:3.16"),
        ("docker.io/x/y", HUB, "x/y", "latest", None, "x/y:latest", f"{HUB}/x/y:latest"),
        ("docker.io/library/alpine:3.16", HUB, "library/alpine", "3.16", None, "alpine:3.16",
         f"{HUB}/library/alpine:3.16"),
        ("index.docker.io/busybox", HUB, "library/busybox", "latest", None, "busybox:latest",
         f"{HUB}/library/busybox:latest"),
        ("foo/bar", HUB, "foo/bar", "latest", None, "foo/bar:latest", f"{HUB}/foo/bar:latest"),
        ("library/a/b", HUB, "library/a/b", "latest", None, "library/a/b:latest",
         f"{HUB}/library/a/b:latest"),
        ("localhost/a", "localhost", "a", "latest", None, "localhost/a:latest",
         "localhost/a:latest"),
        ("localhost:5000/a/b:t", "localhost:5000", "a/b", "t", None, "localhost:5000/a/b:t",
         "localhost:5000/a/b:t"),
        ("127.0.0.1:5055/mpc/busybox:1.35", "127.0.0.1:5055", "mpc/busybox", "1.35", None,
         "127.0.0.1:5055/mpc/busybox:1.35", "127.0.0.1:5055/mpc/busybox:1.35"),
        ("[::1]:5000/x:1", "[::1]:5000", "x", "1", None, "[::1]:5000/x:1", "[::1]:5000/x:1"),
        ("ghcr.io/o/deep/img:v1.2-rc_3", "ghcr.io", "o/deep/img", "v1.2-rc_3", None,
         "ghcr.io/o/deep/img:v1.2-rc_3", "ghcr.io/o/deep/img:v1.2-rc_3"),
        ("my-reg.example.com/a__b/c-d.e", "my-reg.example.com", "a__b/c-d.e", "latest", None,
         "my-reg.example.com/a__b/c-d.e:latest", "my-reg.example.com/a__b/c-d.e:latest"),
        (f"a/b@{D}", HUB, "a/b", None, D, f"a/b@{D}", f"{HUB}/a/b@{D}"),
        (f"a:t@{D}", HUB, "library/a", "t", D, f"a:t@{D}", f"{HUB}/library/a:t@{D}"),
        (f"ghcr.io/o/r@{D}", "ghcr.io", "o/r", None, D, f"ghcr.io/o/r@{D}", f"ghcr.io/o/r@{D}"),
    ],
)  # fmt: skip
def test_reference_parse(text, registry, repository, tag, digest, familiar, full):
    ref = Reference.parse(text)
    assert ref == Reference(registry, repository, tag, digest)
    assert ref.familiar == familiar
    assert str(ref) == full
    assert Reference.parse(str(ref)) == ref  # the full form round-trips


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Foo:bar", "repository names must be lowercase"),
        ("", "empty"),
        ("alpine:", "tag"),
        ("alpine:a+b", "tag"),
        ("alpine@sha256:abc", "digest"),
        (f"alpine@md5:{'ab' * 16}", "digest"),
        ("a//b", "repository name"),
        ("ghcr.io/", "repository name"),
        ("-x", "repository name"),
        ("bad_host.com:port/x", "registry host"),
        ("a b", "repository name"),
    ],
)
def test_reference_parse_rejects(text, why):
    with pytest.raises(ImageError, match="invalid image reference") as info:
        Reference.parse(text)
    assert why in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "pull_name"),
    [
        ("docker.io/library/alpine:3.16", f"alpine@{D}"),
        ("alpine", f"alpine@{D}"),
        ("someone/tool:1", f"someone/tool@{D}"),
        ("127.0.0.1:5055/mpc/busybox:1.35", f"127.0.0.1:5055/mpc/busybox@{D}"),
    ],
)
def test_pull_name(text, pull_name):
    pinned = Reference.parse(text).with_digest(D)
    assert pinned.pull_name == pull_name
    assert pinned.tag == Reference.parse(text).tag  # kept for display


def test_pull_name_needs_digest_and_with_digest_validates():
    with pytest.raises(ValueError, match="no digest"):
        _ = Reference.parse("alpine").pull_name
    with pytest.raises(ValueError, match="invalid digest"):
        Reference.parse("alpine").with_digest("sha256:nothex")


@pytest.mark.parametrize(
    "digest", ["sha256:nothex", f"md5:{'ab' * 16}", "sha256:" + "AB" * 32, "ab" * 32, ""]
)
def test_a_bad_digest_is_an_invalid_argument_naming_the_fix(digest):
    with pytest.raises(InvalidArgument) as info:
        check_digest(digest)
    message = str(info.value)
    assert isinstance(info.value, MPCError) and "\n" not in message
    assert message.startswith(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex")
    assert "copy it exactly as the registry or `docker images --digests` shows it" in message
    with pytest.raises(InvalidArgument):
        Reference.parse("alpine").with_digest(digest)


def test_pull_name_without_a_digest_is_an_invalid_argument_naming_the_fix():
    with pytest.raises(InvalidArgument) as info:
        _ = Reference.parse("ghcr.io/o/r:1").pull_name
    assert str(info.value) == (
        "ghcr.io/o/r:1 has no digest, so it names no exact content; resolve it first "
        "(RegistryClient.resolve) or give it as NAME@sha256:<64 hex digits>"
    )
    assert check_digest(D) == D
