"""End-to-end studies that train, measure and write a report (MobileNet study, training dynamics)."""
