"""The one exception the data layer raises for problems a user can fix."""

from knifejax.errors import UserError


class DataError(UserError, ValueError):
    """An image file or CSV row a user must fix: missing, unreadable, truncated or wrongly labelled.

    The message names the file (and the CSV row where there is one) and says what to do.
    """
