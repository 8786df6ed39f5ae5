"""Hartonomous: a multi-tenant platform where everything a tenant brings becomes atoms."""

__version__ = "0.1.0"
