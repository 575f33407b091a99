"""Dependency lists are checked the way pip and npm read them: only registry packages get through."""

from __future__ import annotations

import json

import pytest

from hearth.packaging.deps import ManifestError, find_dependencies

REGISTRY = "https://registry.npmjs.org/"


def lock(**content: object) -> bytes:
    return json.dumps({"lockfileVersion": 3, **content}).encode()


@pytest.mark.parametrize(
    ("content", "line", "why"),
    [
        # the vectors: a source tree named by a relative path, a split `file:` reference, an sdist
        # by URL, option lines (split with a continuation, or long form) that read host files or URLs
        (b"six\na/../../../x/pkg\n", 2, "not a package requirement"),
        (b"pkg @ fi\\\nle:///etc/passwd\n", 1, "direct references"),
        (b"pkg @ http://127.0.0.1:9/pkg-1.0.tar.gz\n", 1, "direct references"),
        (b"six\n-\\\nr /etc/shadow\n", 2, "'-r' is not allowed"),
        (b"--requirement=/proc/self/environ\n", 1, "'--requirement' is not allowed"),
        (b"# metrics\n--requirement=http://127.0.0.1:8000/metrics\n", 2, "'--requirement' is not allowed"),
        (b"-c /etc/passwd\n", 1, "'-c' is not allowed"),
        (b"-e .\n", 1, "'-e' is not allowed"),
        (b"--index-url http://example.invalid/simple\nsix\n", 1, "'--index-url' is not allowed"),
        (b"-f /opt/wheels\n", 1, "'-f' is not allowed"),
        (b"--pre\n", 1, "'--pre' is not allowed"),
        (b"six --index-url=http://example.invalid\n", 1, "'--index-url' is not allowed; only --hash"),
        (b"six --hash=md5:abc\n", 1, "is not a hash"),
        (b"./pkg\n", 1, "not a package requirement"),
        (b"/tmp/pkg\n", 1, "not a package requirement"),
        (b"pkg-1.0-py3-none-any.whl\n", 1, "archive file"),
        (b"git+https://example.invalid/x/y\n", 1, "not a package requirement"),
        (b"${HEARTH_API_KEY}\n", 1, "environment variables"),
        (b"# -*- coding: utf-7 -*-\n+AC0-r /etc/shadow\n", 1, "encoding"),
    ],
)
def test_requirements_that_reach_outside_the_index_are_refused(content: bytes, line: int, why: str) -> None:
    with pytest.raises(ManifestError) as refused:
        find_dependencies("python", {"requirements.txt": content})
    assert str(refused.value).startswith(f"requirements.txt line {line}: "), refused.value
    assert why in str(refused.value)


def test_requirements_are_read_as_pip_reads_them_and_rendered_from_what_was_checked() -> None:
    text = (
        b"# pinned\nsix==1.16.0   # a comment\n\n"
        b"requests[socks] >= 2.0 ; python_version >= '3.8' \\\n  --hash=sha256:abcdef\n"
        b"attrs\\\n"
    )
    deps = find_dependencies("python", {"requirements.txt": text})
    assert deps is not None
    assert deps.files["requirements.txt"] == (
        b'six==1.16.0\nrequests[socks]>=2.0; python_version >= "3.8" --hash=sha256:abcdef\nattrs\n'
    )
    # as with pip, a comment ending in a backslash does not continue onto the next line
    with pytest.raises(ManifestError, match="line 3: the option line '-r'"):
        find_dependencies("python", {"requirements.txt": b"# -r /etc/shadow\n#\\\n-r /etc/shadow\n"})


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        ({"dependencies": {"x": "git+file:///some/host/repo"}}, "dependencies.x"),
        ({"dependencies": {"x": "file:../../secret"}}, "dependencies.x"),
        ({"dependencies": {"x": "link:/etc"}}, "dependencies.x"),
        ({"dependencies": {"x": "../x"}}, "dependencies.x"),
        ({"dependencies": {"x": "~/x"}}, "dependencies.x"),
        ({"dependencies": {"x": "user/repo"}}, "dependencies.x"),
        ({"dependencies": {"x": "github:user/repo"}}, "dependencies.x"),
        ({"dependencies": {"x": "http://127.0.0.1:8000/x.tgz"}}, "dependencies.x"),
        ({"dependencies": {"x": "x-1.0.0.tgz"}}, "dependencies.x"),
        ({"dependencies": {"x": "npm:y@file:../y"}}, "dependencies.x"),
        ({"dependencies": {"../../x": "1.0.0"}}, "not a package name"),
        ({"dependencies": {"x": "1"}, "devDependencies": {"y": "git+file:///repo"}}, "devDependencies.y"),
        ({"dependencies": {"x": "1"}, "optionalDependencies": {"y": "file:/etc"}}, "optionalDependencies.y"),
        ({"dependencies": {"x": "1"}, "peerDependencies": {"y": "file:/etc"}}, "peerDependencies.y"),
        ({"dependencies": {"x": "1"}, "overrides": {"y": {"z": "git+file:///repo"}}}, "overrides.y.z"),
        ({"dependencies": {"x": "1"}, "workspaces": ["packages/*"]}, "workspaces"),
    ],
)
def test_package_json_specs_other_than_registry_versions_are_refused(manifest: dict[str, object], why: str) -> None:
    with pytest.raises(ManifestError) as refused:
        find_dependencies("javascript", {"package.json": json.dumps(manifest).encode()})
    assert str(refused.value).startswith("package.json") and why in str(refused.value), refused.value


def test_registry_versions_ranges_tags_and_aliases_pass() -> None:
    specs = {
        "a": "7.0.0",
        "b": "^7",
        "c": "~1.2 || >=3 <4",
        "d": "latest",
        "e": "next",
        "f": "*",
        "g": "",
        "h": "npm:is-number@^7",
        "@s/i": "1.x",
        "j": "npm:@scope/pkg@2",
    }
    deps = find_dependencies("javascript", {"package.json": json.dumps({"dependencies": specs}).encode()})
    assert deps is not None


@pytest.mark.parametrize(
    ("lockfile", "why"),
    [
        (
            lock(packages={"node_modules/x": {"version": "1.0.0", "resolved": "git+file:///repo"}}),
            "not on the registry",
        ),
        (lock(packages={"node_modules/x": {"version": "1.0.0", "resolved": "file:../x"}}), "not on the registry"),
        (
            lock(packages={"node_modules/x": {"resolved": "https://registry.npmjs.org.example.invalid/x.tgz"}}),
            "not on the registry",
        ),
        (lock(packages={"node_modules/x": {"resolved": "http://127.0.0.1:8000/x.tgz"}}), "not on the registry"),
        (lock(packages={"node_modules/x": {"link": True, "resolved": "../x"}}), "links to a local directory"),
        (lock(packages={"../x": {"version": "1.0.0"}}), "not a package under node_modules"),
        (lock(packages={"node_modules/../../x": {"version": "1.0.0"}}), "not a package under node_modules"),
        (
            lock(packages={"node_modules/x": {"version": "git+ssh://git@example.invalid/x.git"}}),
            "not a registry version",
        ),
        (lock(packages={"": {"dependencies": {"x": "file:../x"}}}), "dependencies.x"),
        (
            json.dumps({"lockfileVersion": 1, "dependencies": {"x": {"version": "file:../x"}}}).encode(),
            "not a registry version",
        ),
    ],
)
def test_lockfile_entries_off_the_registry_are_refused(lockfile: bytes, why: str) -> None:
    files = {"package.json": b'{"dependencies": {"x": "1"}}', "package-lock.json": lockfile}
    with pytest.raises(ManifestError) as refused:
        find_dependencies("javascript", files, npm_registry=REGISTRY)
    assert str(refused.value).startswith("package-lock.json") and why in str(refused.value), refused.value


def test_a_lockfile_on_the_registry_passes() -> None:
    lockfile = lock(
        packages={
            "": {"dependencies": {"x": "1"}},
            "node_modules/x": {"version": "1.0.0", "resolved": "https://registry.npmjs.org/x/-/x-1.0.0.tgz"},
            "node_modules/x/node_modules/@s/y": {"version": "2.0.0"},
        }
    )
    files = {"package.json": b'{"dependencies": {"x": "1"}}', "package-lock.json": lockfile}
    deps = find_dependencies("javascript", files, npm_registry=REGISTRY)
    assert deps is not None and deps.files["package-lock.json"] == lockfile


@pytest.mark.parametrize(
    ("language", "files"),
    [
        ("python", {"requirements.txt": b"# -*- coding: no-such-codec -*-\nsix\n"}),
        (
            "javascript",
            {"package.json": b'{"dependencies": {"x": "1"}, "overrides": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001},
        ),
        ("javascript", {"package.json": b'{"dependencies": {"x": "' + b"1 " * 20000 + b'"}}'}),
    ],
)
def test_odd_manifests_are_a_clear_refusal_not_a_crash(language: str, files: dict[str, bytes]) -> None:
    with pytest.raises(ManifestError) as refused:
        find_dependencies(language, files)
    assert len(str(refused.value)) < 400
