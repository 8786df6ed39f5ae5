"""Admission control: a tenant's plan (request rate, concurrent generations, tokens per
minute), the limiters that enforce it, and what a refused request is told."""
