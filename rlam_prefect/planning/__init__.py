"""What runs next: requests and plans, decision sources, planners, the litellm door and policies."""
