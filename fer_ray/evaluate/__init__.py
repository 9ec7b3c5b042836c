"""The paper's evaluation tables for one or more model artifacts (nothing imported here: ``config`` is torch-free)."""
