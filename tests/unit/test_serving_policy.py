"""serving.policy: locality, locality+migration, random and least-loaded over pure snapshots."""

import pytest

from serving.config import ConfigError, load_config
from serving.policy import (
    POLICIES,
    REGISTRY,
    Decision,
    Inference,
    LeastLoaded,
    Locality,
    ModelInfo,
    PolicyError,
    ServerView,
    Snapshot,
    TierView,
    get_policy,
)

GB = 10**9
DRAM, DISK, REMOTE = 20e9, 2e9, 0.2e9  # bytes/s


def server(index, *, dram=(), local=(), free=True, model=None, running=(), queue=0.0,
           reclaimable=False, last_used=0.0, load=0, alive=True, registry_bw=REMOTE,
           busy_for=None):
    return ServerView(
        index, f"s{index}", alive=alive, free=free, model=model, running=tuple(running),
        reclaimable=reclaimable, last_used=last_used, load=load, queue_wait=queue,
        busy_for=busy_for,
        tiers=(TierView("dram", DRAM, 0.0, frozenset(dram)),
               TierView("local", DISK, 0.001, frozenset(local))),
        registry=TierView(REGISTRY, registry_bw, 0.01))


def snap(servers, *models):
    models = models or (ModelInfo("m", 2 * GB),)
    return Snapshot.of(servers, models)


def running(n, model="x", tokens=100):
    return [Inference(f"r{model}{i}", model, tokens) for i in range(n)]


# -- locality -------------------------------------------------------------------------------


def test_locality_prefers_dram_over_disk_over_registry():
    s = snap([server(0), server(1, local=["m"]), server(2, dram=["m"], local=["m"])])
    d = get_policy("locality").place("m", s)
    assert d.server == 2 and d.chosen.tier == "dram"
    assert [(c.server, c.tier) for c in d.candidates] == [(2, "dram"), (1, "local"),
                                                           (0, REGISTRY)]
    assert d.candidates[0].seconds == pytest.approx(2 * GB / DRAM)
    assert d.candidates[1].seconds == pytest.approx(0.001 + 2 * GB / DISK)
    assert d.candidates[2].seconds == pytest.approx(0.01 + 2 * GB / REMOTE)


def test_locality_prefers_disk_over_registry():
    d = Locality().place("m", snap([server(0), server(1, local=["m"]), server(2)]))
    assert (d.server, d.chosen.tier) == (1, "local")


def test_a_long_queue_on_the_dram_server_changes_the_choice():
    servers = [server(0, local=["m"]), server(1, dram=["m"], queue=0.5)]
    assert Locality().place("m", snap(servers)).server == 1  # 0.6 s < 1.0 s from disk
    servers[1] = server(1, dram=["m"], queue=5.0)
    d = Locality().place("m", snap(servers))
    assert d.server == 0 and d.chosen.tier == "local"
    slow = next(c for c in d.candidates if c.server == 1)
    assert slow.queue == 5.0 and slow.load_seconds == pytest.approx(2 * GB / DRAM)


def test_a_queue_also_ranks_servers_loading_from_the_registry():
    d = Locality().place("m", snap([server(0, queue=3.0), server(1, queue=1.0), server(2)]))
    assert d.server == 2


def test_registry_bandwidth_differences_are_not_missed_by_the_bounded_scan():
    servers = [server(0, registry_bw=REMOTE), server(1, registry_bw=10 * REMOTE)]
    assert Locality().place("m", snap(servers)).server == 1


def test_the_candidates_say_why():
    d = Locality().place("m", snap([server(0, dram=["m"])]))
    assert "dram holds it" in d.chosen.why and "MB/s" in d.chosen.why


def test_busy_and_dead_servers_take_no_start():
    servers = [server(0, dram=["m"], free=False, model="x", running=running(1)),
               server(1, dram=["m"], alive=False), server(2)]
    d = Locality().place("m", snap(servers, ModelInfo("m", GB), ModelInfo("x", GB)))
    assert d.server == 2 and d.chosen.tier == REGISTRY and d.migration is None


def test_nothing_free_and_nothing_reclaimable_means_wait():
    servers = [server(0, free=False, model="x", running=running(1))]
    for name in POLICIES:
        d = get_policy(name).place("m", snap(servers, ModelInfo("m", GB), ModelInfo("x", GB)))
        assert d.server is None and d.chosen is None


@pytest.mark.parametrize("name", ["locality", "locality+migration"])
def test_a_start_waits_for_a_busy_holder_that_idles_sooner_than_a_registry_load(name):
    # the registry takes 10 s for m; the DRAM holder is busy with x for about 1 s more
    busy = server(1, dram=["m", "x"], free=False, model="x", running=running(1),
                  busy_for=1.0)
    d = get_policy(name).place("m", snap([server(0), busy], ModelInfo("m", 2 * GB),
                                         ModelInfo("x", 2 * GB, cost_a=1.0, cost_b=30.0)))
    assert d.server is None and d.chosen is None and d.migration is None
    first = d.candidates[0]
    assert (first.server, first.wait, first.tier, first.evict) == (1, True, "dram", "x")
    assert first.seconds == pytest.approx(1.0 + 2 * GB / DRAM)
    assert first.queue == pytest.approx(1.0) and "busy with x" in first.why
    assert first.penalty == pytest.approx(2 * GB / DRAM)  # x reloads from that DRAM
    assert (d.candidates[1].server, d.candidates[1].wait) == (0, False)


def test_no_waiting_for_a_holder_busy_longer_than_starting_elsewhere():
    busy = server(1, dram=["m"], free=False, model="x", running=running(1), busy_for=30.0)
    d = Locality().place("m", snap([server(0), busy]))
    assert d.server == 0 and d.chosen.tier == REGISTRY
    assert all(not c.wait for c in d.candidates)


def test_no_waiting_when_the_busy_time_is_unknown_or_the_request_waited_long_enough():
    unknown = server(1, dram=["m"], free=False, model="x", running=running(1))
    assert Locality().place("m", snap([server(0), unknown])).server == 0
    busy = server(1, dram=["m"], free=False, model="x", running=running(1), busy_for=1.0)
    waited = Locality().place("m", snap([server(0), busy], ModelInfo("m", 2 * GB,
                                                                     waited=10.5)))
    assert waited.server == 0 and all(not c.wait for c in waited.candidates)


def test_waiting_examines_only_the_holders():
    others = [server(i, free=False, model="y", running=running(1, "y"), busy_for=0.1)
              for i in range(2, 200)]
    busy = server(1, dram=["m"], free=False, model="x", running=running(1), busy_for=1.0)
    d = Locality().place("m", snap([server(0), busy, *others]))
    assert d.server is None and d.candidates[0].server == 1
    assert d.examined == 2


def test_a_reclaimable_server_is_used_only_when_none_is_free():
    servers = [server(0, dram=["m"], free=False, model="x", reclaimable=True), server(1)]
    models = (ModelInfo("m", GB), ModelInfo("x", GB))
    assert Locality().place("m", snap(servers, *models)).server == 1  # keep-alive respected
    servers[1] = server(1, free=False, model="y", reclaimable=True, last_used=0.0)
    d = Locality().place("m", snap(servers, *models, ModelInfo("y", GB)))
    assert d.server == 0 and d.chosen.evict == "x" and d.chosen.tier == "dram"


def test_an_idle_holder_is_reclaimed_when_that_saves_more_than_its_reload_costs():
    # m from server 0's DRAM, x (unloaded there) back from the same DRAM: 0.2 s in all,
    # against 5 s from the registry on the free server 1
    servers = [server(0, dram=["m", "x"], free=False, model="x", reclaimable=True), server(1)]
    d = Locality().place("m", snap(servers, ModelInfo("m", GB), ModelInfo("x", GB)))
    assert (d.server, d.chosen.evict, d.chosen.tier) == (0, "x", "dram")
    assert d.chosen.penalty == pytest.approx(GB / DRAM)
    assert [c.server for c in d.candidates] == [0, 1]


def test_the_victim_is_the_least_recently_used_idle_instance():
    servers = [server(0, free=False, model="a", reclaimable=True, last_used=5.0),
               server(1, free=False, model="b", reclaimable=True, last_used=2.0),
               server(2, free=False, model="c", running=running(1, "c"), last_used=1.0)]
    models = [ModelInfo(n, GB) for n in "abcm"]
    for name in ("locality", "least-loaded"):
        d = get_policy(name).place("m", snap(servers, *models))
        assert (d.server, d.chosen.evict) == (1, "b")
    # never an instance of the model that needs room
    assert Locality().place("b", snap(servers, *models)).server == 0


def test_an_unknown_model_is_a_clear_error():
    with pytest.raises(PolicyError, match="'nope' is not in the snapshot"):
        Locality().place("nope", snap([server(0)]))


def test_servers_must_be_listed_by_index():
    with pytest.raises(PolicyError, match="by index"):
        Snapshot.of([server(1)], [])


# -- cost per decision ------------------------------------------------------------------


def cluster(n_others, *, free_others):
    """Two servers holding m and n_others that do not (free or busy with x)."""
    servers = [server(0, local=["m"]), server(1, dram=["m"])]
    for i in range(2, 2 + n_others):
        servers.append(server(i) if free_others else
                       server(i, free=False, model="x", running=running(1)))
    return snap(servers, ModelInfo("m", GB), ModelInfo("x", GB))


@pytest.mark.parametrize("free_others", [True, False])
@pytest.mark.parametrize("name", sorted(POLICIES))
def test_decision_cost_does_not_grow_with_servers_unrelated_to_it(name, free_others):
    small, large = cluster(10, free_others=free_others), cluster(10_000, free_others=free_others)
    a = get_policy(name).place("m", small)
    b = get_policy(name).place("m", large)
    assert a.examined == b.examined <= 3
    if name.startswith("locality"):
        assert a.server == b.server == 1


def test_migration_examines_only_the_holders_of_both_models():
    def big(n):
        servers = [server(0, dram=["m"], free=False, model="x", running=running(2)),
                   server(1, local=["x"])]
        servers += [server(i, free=False, model="y", running=running(1, "y"))
                    for i in range(2, n)]
        return snap(servers, ModelInfo("m", 2 * GB), ModelInfo("x", GB, cost_a=0.001),
                    ModelInfo("y", GB))
    a = get_policy("locality+migration").place("m", big(10))
    b = get_policy("locality+migration").place("m", big(10_000))
    assert a.migration == b.migration and a.migration is not None
    assert a.examined == b.examined


# -- migration ----------------------------------------------------------------------------


def migration_cluster(tokens=100, a=0.001, b=0.05):
    """m lives in server 0's DRAM, which runs x; server 1 holds x on disk, server 2 nothing."""
    servers = [server(0, dram=["m"], free=False, model="x", running=running(2, tokens=tokens)),
               server(1, local=["x"]), server(2)]
    return snap(servers, ModelInfo("m", 4 * GB), ModelInfo("x", GB, cost_a=a, cost_b=b))


def test_locality_migration_frees_the_dram_server_when_that_is_faster():
    d = get_policy("locality+migration").place("m", migration_cluster())
    assert d.server in (1, 2)  # the plan without migration stays valid
    m = d.migration
    assert (m.source, m.destination, m.model) == (0, 1, "x")
    assert m.request_ids == ("rx0", "rx1") and m.tier == "local"
    assert m.recompute_seconds == pytest.approx(2 * (0.001 * 100 + 0.05))
    assert m.load_seconds == pytest.approx(0.001 + GB / DISK)
    assert m.cost == pytest.approx(m.load_seconds + m.recompute_seconds)
    assert m.start.server == 0 and m.start.tier == "dram"
    assert m.start.seconds == pytest.approx(m.cost + 4 * GB / DRAM)
    assert m.start.seconds < d.chosen.seconds


def test_the_destination_minimises_the_migration_cost():
    # x is on server 2's disk and server 3's DRAM: the DRAM one is the cheaper destination
    servers = [server(0, dram=["m"], free=False, model="x", running=running(1)),
               server(1), server(2, local=["x"]), server(3, dram=["x"])]
    d = get_policy("locality+migration").place(
        "m", snap(servers, ModelInfo("m", 4 * GB), ModelInfo("x", GB, cost_a=0.001)))
    assert d.migration.destination == 3 and d.migration.tier == "dram"


def test_the_source_is_the_one_with_the_cheapest_total():
    # both 0 and 1 hold m in DRAM; 1's inferences have fewer tokens to recompute
    servers = [server(0, dram=["m"], free=False, model="x", running=running(2, tokens=4000)),
               server(1, dram=["m"], free=False, model="x", running=running(2, tokens=10)),
               server(2, local=["x"]), server(3)]
    d = get_policy("locality+migration").place(
        "m", snap(servers, ModelInfo("m", 4 * GB), ModelInfo("x", GB, cost_a=0.001)))
    assert d.migration.source == 1


def test_no_migration_when_it_costs_more_than_starting_elsewhere():
    assert get_policy("locality+migration").place(
        "m", migration_cluster(tokens=100_000)).migration is None


def test_no_migration_without_a_free_destination():
    servers = [server(0, dram=["m"], free=False, model="x", running=running(1)),
               server(1, free=False, model="y", reclaimable=True)]
    d = get_policy("locality+migration").place(
        "m", snap(servers, ModelInfo("m", 4 * GB), ModelInfo("x", GB), ModelInfo("y", GB)))
    assert d.migration is None and d.server == 1


def test_no_migration_of_a_loading_instance_or_of_the_same_model():
    servers = [server(0, dram=["m"], free=False, model="x"),  # loading: nothing running
               server(1, dram=["m"], free=False, model="m", running=running(1, "m")),
               server(2, local=["x"]), server(3)]
    d = get_policy("locality+migration").place(
        "m", snap(servers, ModelInfo("m", 4 * GB), ModelInfo("x", GB)))
    assert d.migration is None


@pytest.mark.parametrize("name", ["locality", "random", "least-loaded"])
def test_only_locality_migration_proposes_migrations(name):
    assert get_policy(name).place("m", migration_cluster()).migration is None


def test_locality_migration_agrees_with_locality_when_it_proposes_nothing():
    s = snap([server(0), server(1, local=["m"])])
    a, b = Locality().place("m", s), get_policy("locality+migration").place("m", s)
    assert (a.server, a.candidates) == (b.server, b.candidates) and b.migration is None


# -- the baselines ------------------------------------------------------------------------


def test_random_is_reproducible_with_a_seed_and_ignores_locality():
    servers = [server(0, dram=["m"], local=["m"])] + [server(i) for i in range(1, 8)]
    s = snap(servers)
    picks = [get_policy("random", seed=7).place("m", s).server for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same first pick
    one = get_policy("random", seed=7)
    seq = [one.place("m", s).server for _ in range(200)]
    again = get_policy("random", seed=7)
    assert seq == [again.place("m", s).server for _ in range(200)]
    assert set(seq) == set(range(8))  # every free server, not just the DRAM holder
    assert seq.count(0) < 60  # ~25 of 200: locality does not attract it
    other = get_policy("random", seed=8)
    assert [other.place("m", s).server for _ in range(200)] != seq


def test_random_reports_its_pick_with_an_estimate():
    d = get_policy("random", seed=1).place("m", snap([server(0, dram=["m"])]))
    assert d.server == 0 and d.chosen.tier == "dram" and d.chosen.seconds > 0


def test_least_loaded_picks_the_emptiest():
    servers = [server(0, dram=["m"], load=3), server(1, load=1), server(2, load=0, queue=2.0),
               server(3, load=0, queue=1.0)]
    d = LeastLoaded().place("m", snap(servers))
    assert d.server == 3 and d.chosen.tier == REGISTRY  # locality ignored


def test_least_loaded_breaks_ties_by_index():
    assert LeastLoaded().place("m", snap([server(0), server(1, dram=["m"])])).server == 0


# -- the registry and configuration -----------------------------------------------------


def test_the_registry_names_every_policy():
    assert sorted(POLICIES) == ["least-loaded", "locality", "locality+migration", "random"]
    for name in POLICIES:
        p = get_policy(name)
        assert p.name == name
        assert isinstance(p.place("m", snap([server(0)])), Decision)


def test_unknown_policies_and_options_are_clear_errors():
    with pytest.raises(PolicyError, match=r"unknown placement policy 'fastest'; known: \["):
        get_policy("fastest")
    with pytest.raises(PolicyError, match="bad options"):
        get_policy("locality", seed=1)


def test_config_validates_the_policy():
    assert load_config(None).policy == "locality"
    assert load_config(None, policy="random").policy == "random"
    with pytest.raises(ConfigError, match="policy: 'fast' is not a placement policy"):
        load_config(None, policy="fast")
