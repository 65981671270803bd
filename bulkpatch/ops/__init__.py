"""Reads of the live API: export, plan, verify and the comparison beneath them."""
