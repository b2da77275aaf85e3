"""How the agent's one connection gets back up: the reconnect schedule, the network watch (kernel
netlink events and a TCP reachability probe) that tells "the network came back" from "the broker
is down". See README.md in this folder."""
