"""infopt: measured model variants, a multi-tenant serving gateway and their infrastructure, from one params.yaml."""

__version__ = "0.1.0"
