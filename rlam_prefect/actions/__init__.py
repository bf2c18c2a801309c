"""The typed action space: @action, the registry, conditions, artifacts and project discovery."""
