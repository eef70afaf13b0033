"""pytest-benchmark suite: rnnfast against its peers over the performance issue's grid.

    pytest bench/ --benchmark-only --benchmark-group-by=param:case \
        --benchmark-columns=median,iqr,rounds

Each group holds one case; compare the medians within it (ratios, not absolute times: the
machine is shared and noisy). Peers that are not installed (torch, jax) are skipped.
"""
