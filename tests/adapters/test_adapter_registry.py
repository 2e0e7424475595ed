"""Resolver and publish: what the server and the trainer rely on."""

from __future__ import annotations

import os

import pytest

from loramux.adapters.errors import InvalidRequest, NotFound
from loramux.adapters.manifest import content_hash
from loramux.adapters.registry import Resolver, publish
from loramux.adapters.store import LocalStore
from loramux.adapters.validation import AdapterInvalid


@pytest.fixture
def local(tmp_path):
    return LocalStore(tmp_path / "store")


def test_publish_validates_stores_and_aliases(store, adapter_dir, base_spec):
    done = publish(store, adapter_dir, tenant="acme", name="support", base=base_spec,
                   eval_scores={"exact_match": 1.0}, aliases=("prod",), max_rank=16)
    resolved = Resolver(store).resolve("acme/support", tenant="acme")
    assert resolved.manifest == done.manifest and done.warnings == []
    assert content_hash(resolved.path) == resolved.version
    assert resolved.engine_name == f"acme/support@{resolved.version}"


def test_publish_of_an_invalid_adapter_stores_nothing(local, make_adapter, base_spec):
    with pytest.raises(AdapterInvalid):
        publish(local, make_adapter(r=32, lora_alpha=32), tenant="acme", name="support", base=base_spec,
                aliases=("prod",), max_rank=16)
    assert local.list() == []


def test_other_tenants_adapters_look_exactly_like_missing_ones(local, adapter_dir, base_spec):
    publish(local, adapter_dir, tenant="globex", name="legal", base=base_spec, aliases=("prod",))
    resolver = Resolver(local)
    assert resolver.resolve("globex/legal").manifest.tenant == "globex"  # admins: any tenant
    errors = []
    for model in ("globex/legal", "globex/nothing", "not a name", "../../etc/passwd"):
        with pytest.raises(NotFound) as err:
            resolver.resolve(model, tenant="acme")
        errors.append(err.value)
    assert {(e.status_code, e.code, e.param) for e in errors} == {(404, "model_not_found", "model")}
    assert errors[0].message.replace("globex/legal", "X") == errors[1].message.replace("globex/nothing", "X")


def test_a_symlink_out_of_the_store_is_refused(tmp_path, adapter_dir, base_spec):
    outside = LocalStore(tmp_path / "outside")
    publish(outside, adapter_dir, tenant="acme", name="support", base=base_spec, aliases=("prod",))
    store = LocalStore(tmp_path / "store")
    os.symlink(outside.root / "acme", store.root / "acme")
    assert store.route("acme/support").primary.tenant == "acme"  # the store itself follows the link...
    with pytest.raises(NotFound):
        Resolver(store).resolve("acme/support")  # ...the resolver refuses what lies outside


def test_a_version_copied_under_another_name_is_not_that_name(local, adapter_dir, base_spec):
    import shutil

    publish(local, adapter_dir, tenant="acme", name="support", base=base_spec, aliases=("prod",))
    shutil.copytree(local.root / "acme", local.root / "globex", symlinks=True)
    with pytest.raises(NotFound):
        Resolver(local).resolve("globex/support")


def test_admin_paths_must_lie_inside_the_store(local, adapter_dir, base_spec, tmp_path):
    done = publish(local, adapter_dir, tenant="acme", name="support", base=base_spec)
    resolver = Resolver(local)
    inside = Resolver(local).resolve(done.manifest.ref).path
    assert resolver.check_path(inside) == inside
    for path in (adapter_dir, local.root / ".." / "elsewhere", "/etc"):
        with pytest.raises(InvalidRequest) as err:
            resolver.check_path(path)
        assert err.value.param == "lora_path"
    with pytest.raises(NotFound):
        resolver.check_path(local.root / "acme" / "nothing")


def test_moving_prod_changes_what_the_next_request_gets(local, adapter_dir, variant, base_spec, tmp_path):
    v1 = publish(local, adapter_dir, tenant="acme", name="support", base=base_spec, aliases=("prod",))
    resolver = Resolver(local)
    before = resolver.resolve("acme/support")
    v2 = publish(local, variant(adapter_dir, tmp_path / "v2", 1), tenant="acme", name="support",
                 base=base_spec, aliases=("prod",))
    after = resolver.resolve("acme/support")
    assert (before.version, after.version) == (v1.manifest.version, v2.manifest.version)
    assert before.engine_name != after.engine_name
    assert resolver.resolve(v1.manifest.served_name).path == before.path  # pinned versions stay


def test_a_resolver_with_a_ttl_reuses_answers_and_never_caches_failures(local, adapter_dir, variant, base_spec,
                                                                        tmp_path):
    cached, fresh = Resolver(local, ttl_s=3600), Resolver(local)
    with pytest.raises(NotFound):
        cached.resolve("acme/support")
    v1 = publish(local, adapter_dir, tenant="acme", name="support", base=base_spec, aliases=("prod",))
    assert cached.resolve("acme/support").version == v1.manifest.version  # the failure was not kept
    v2 = publish(local, variant(adapter_dir, tmp_path / "v2", 1), tenant="acme", name="support",
                 base=base_spec, aliases=("prod",))
    assert cached.resolve("acme/support").version == v1.manifest.version
    assert fresh.resolve("acme/support").version == v2.manifest.version
    with pytest.raises(NotFound):  # the tenant check comes before the cache
        cached.resolve("acme/support", tenant="globex")
