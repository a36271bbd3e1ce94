// pydata-sphinx-theme 0.17 attaches the sidebar toggles to the first element of each
// class only; sphinx-book-theme renders a second, visible one, which then did nothing on a
// phone (pydata-sphinx-theme issue 2451).  Every other toggle forwards its click to the
// first, whose listener opens the sidebar.
document.addEventListener("DOMContentLoaded", () => {
  for (const kind of ["primary-toggle", "secondary-toggle"]) {
    const [first, ...others] = document.querySelectorAll("." + kind);
    for (const other of others) {
      other.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        first.click();
      });
    }
  }
});
