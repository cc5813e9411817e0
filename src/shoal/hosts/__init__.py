"""Host networking for privileged mode: network-namespace "pods" and transparent capture.

Needs root (``ip netns``, ``iptables``). The unprivileged mode (docs/adr/0001) needs none of
this. See docs/hosts.md.
"""
