"""methane-agent: the on-device daemon (sampler -> spool -> uplink, with shadow and jobs control)."""

__version__ = "0.1.0"
