"""The one exception the data layer raises for problems a user can fix."""


class DataError(ValueError):
    """An image file or CSV row a user must fix: missing, unreadable, truncated or wrongly labelled.

    The message names the file (and the CSV row where there is one) and says what to do.
    """
