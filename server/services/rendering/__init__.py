"""Pictures of arrays shared by the views: colour maps and channel atlases (PNG)."""
